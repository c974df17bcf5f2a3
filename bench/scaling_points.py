"""One point of each scaling curve, measured from the load host (bench/scaling.py runs it there).

Drain: N log-channel notifications queued as the API leaves them, then W worker processes (one
per worker host) started together; timed until Redis holds nothing queued or pending, and every
notification is checked ``delivered`` in PostgreSQL afterwards. Accept: P ``pulse api``
processes on the API host, one wrk per process in parallel, rates summed; connections per process
climb a ladder and the point is the best rate whose p99 stays within the bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench import cpu
from bench.accept import PATH, WARMUP_S, ensure_wrk
from bench.processes import ROOT, clean_env, wait_http
from bench.pulse_drain import enqueue_bulk, wait_acknowledged
from bench.scope import Scope, fresh_scope
from pulse.queue.client import open_redis
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore

API_PORT = 8000
STOP_TIMEOUT_S = 30.0
LOAD = ("load",)
WRK_SLACK_S = 30.0


@dataclass(frozen=True)
class Hosts:
    """Where things run: command prefixes per host, the API host's address, servers' pids."""

    workers: Sequence[Sequence[str]]  # one `ip netns exec` prefix per worker host
    api: Sequence[str]
    api_address: str
    redis_pid: int
    postgres_pid: int
    masters: dict[str, int] = field(default_factory=dict)  # a cluster's redis-servers by host

    def servers(self) -> dict[str, list[int]]:
        """The CPU groups besides Pulse's: the two servers and the load host's harness (the
        process alone: its reaped children, the wrk processes, count under it, the live Pulse
        processes it started do not). With a cluster, ``redis`` is the sum of its masters, and
        each master is a group of its own too (``redis@r1``)."""
        redis = list(self.masters.values()) or [self.redis_pid]
        each = {f"redis@{host}": [pid] for host, pid in self.masters.items()}
        return {"redis": redis, "postgres": [self.postgres_pid], "load": [os.getpid()]} | each


@contextlib.contextmanager
def _started(commands: Sequence[Sequence[str]], env: Mapping[str, str]) -> Iterator[list[Any]]:
    processes: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            process = subprocess.Popen(
                list(command),
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            processes.append(process)
        yield processes
    finally:
        for process in processes:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin:
        with contextlib.suppress(OSError):
            process.stdin.close()
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def drain(
    hosts: Hosts,
    redis_url: str,
    admin_url: str,
    jobs: int,
    *,
    cluster: bool = False,
    partitions: int = 1,
    token: str | None = None,
) -> dict[str, Any]:
    """One run: ``jobs`` queued, then drained by one worker process per worker host; on a
    Redis Cluster (``cluster``) the queue split into ``partitions``, the scope named by
    ``token`` (bench/scaling_spread.py picks it)."""
    async with fresh_scope(redis_url, admin_url, cluster=cluster, token=token) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis = open_redis(redis_url, cluster=cluster)
        keys = QueueKeys(scope.prefix, partitions=partitions)
        env = scope.env() | {"PULSE_REDIS_PARTITIONS": str(partitions)}
        try:
            await enqueue_bulk(pool, redis, scope.prefix, jobs, partitions=partitions)
            await _settle(pool)
            worker = [sys.executable, "-m", "bench.pulse_worker"]
            commands = [[*prefix, *worker] for prefix in hosts.workers]
            with _started(commands, clean_env(env)) as workers:
                for worker in workers:
                    if worker.stdout.readline().strip() != "ready":
                        raise RuntimeError("a worker of the scaling bench did not start")
                groups = hosts.servers() | {"pulse": [w.pid for w in workers]}
                before = cpu.sample(groups, LOAD)
                for worker in workers:
                    worker.stdin.write("go\n")
                    worker.stdin.flush()
                for part in keys.partition_keys():  # whichever lane (tenants' by default)
                    await wait_acknowledged(redis, part)
                after = cpu.sample(groups, LOAD)
            delivered = await pool.fetchval(
                "SELECT count(*) FROM notifications WHERE status = 'delivered'"
            )
            if delivered != jobs:
                raise RuntimeError(f"{delivered} of {jobs} notifications delivered")
            seconds = after.at - before.at
            return {"jobs": jobs, "seconds": round(seconds, 3), "rate": round(jobs / seconds, 1),
                    "cpu": cpu.usage(before, after)}  # fmt: skip
        finally:
            await redis.aclose()
            await pool.close()


async def _settle(pool: asyncpg.Pool) -> None:
    """Untimed: the queued rows vacuumed and analysed and a checkpoint taken, so autovacuum
    and the checkpointer do not charge the set-up's inserts to the timed drain."""
    await pool.execute("VACUUM ANALYZE")
    await pool.execute("CHECKPOINT")


async def accept(
    hosts: Hosts, redis_url: str, admin_url: str, processes: int, plan: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``plan["runs"]`` ladders against ``processes`` API processes; one result per run."""
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 1)
        try:
            key = (await TenantStore(pool).create(f"bench-{scope.prefix}")).api_key
        finally:
            await pool.close()
        with _apis(hosts, scope, processes) as (bases, pids):
            _wrk_all(bases, 4, WARMUP_S, key)
            groups = hosts.servers() | {"pulse": pids}
            return [_ladder(bases, key, groups, plan) for _ in range(plan["runs"])]


@contextlib.contextmanager
def _apis(hosts: Hosts, scope: Scope, count: int) -> Iterator[tuple[list[str], list[int]]]:
    ports = [API_PORT + i for i in range(count)]
    command = [*hosts.api, sys.executable, "-m", "pulse", "api"]
    processes = []
    with contextlib.ExitStack() as stack:
        for port in ports:
            env = clean_env(scope.env() | {"PULSE_HTTP_HOST": hosts.api_address,
                                           "PULSE_HTTP_PORT": str(port)})  # fmt: skip
            processes += stack.enter_context(_started([command], env))
        bases = [f"http://{hosts.api_address}:{port}" for port in ports]
        for base, process in zip(bases, processes, strict=True):
            wait_http(base + "/healthz", process)
        yield bases, [process.pid for process in processes]


def _ladder(
    bases: list[str], key: str, groups: dict[str, list[int]], plan: Mapping[str, Any]
) -> dict[str, Any]:
    """Climb the connections per process; keep the best rate within the p99 bound."""
    best: dict[str, Any] | None = None
    for connections in plan["connections"]:
        before = cpu.sample(groups, LOAD)
        step = _wrk_all(bases, connections, plan["seconds"], key)
        step["cpu"] = cpu.usage(before, cpu.sample(groups, LOAD))
        step["within_bound"] = step["p99_ms"] <= plan["p99_ms"]
        if best is None or (step["within_bound"] and step["rps"] > best["rps"]):
            best = step
        if not step["within_bound"]:
            break
    assert best is not None
    return best


def _wrk_all(bases: list[str], connections: int, seconds: float, key: str) -> dict[str, Any]:
    """One wrk per API process at once; rates and errors summed, the worst p99 kept."""
    command = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "-s", str(ROOT / "bench" / "post.lua")]  # fmt: skip
    env = os.environ | {"PULSE_BENCH_KEY": key}
    runs = [
        subprocess.Popen([*command, base + PATH], env=env, stdout=subprocess.PIPE, text=True)
        for base in bases
    ]
    outputs = [run.communicate(timeout=seconds + WRK_SLACK_S)[0] for run in runs]
    figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rps = sum(f["requests"] / f["seconds"] for f in figures)
    return {
        "connections": connections * len(bases),
        "rps": round(rps, 1),
        "p50_ms": max(f["p50_ms"] for f in figures),
        "p99_ms": max(f["p99_ms"] for f in figures),
        "errors": sum(f["socket_errors"] + f["non_2xx"] for f in figures),
        "at": time.time(),
    }
