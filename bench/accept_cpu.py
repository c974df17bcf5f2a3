"""Accept, before and after, in one run: req/s, p50, p99 and the server's CPU per request.

    python -m bench.accept_cpu [--before REF] [--processes N] [--seconds S] [--runs R]

Measures, interleaved and ``--runs`` times each (medians printed): the bare one-XADD and
pipelined endpoints of bench/bare_xadd.py, Pulse's ``POST /api/notifications/`` from this
tree (one process, and ``--processes`` N when above 1) and, with ``--before``, from a git
revision (exported to a temporary folder: the same servers, the same wrk). CPU per request is
the API processes' user+system time over the requests answered: on a machine shared with other
work it compares better than requests/s. Servers as in bench/servers.py (PULSE_BENCH_*_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.accept import PATH, WARMUP_S, bare_xadd, wrk
from bench.processes import READY_TIMEOUT_S, ROOT, clean_env, log_file, wait_http
from bench.scope import Scope, fresh_scope
from bench.servers import free_port, servers
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids`` and their waited-for children, from /proc."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15]) / TICK
    return total


def listeners(port: int) -> list[int]:
    """The processes listening on ``port`` (``ss`` from iproute2)."""
    found = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", found.stdout)})


def measured(base: str, port: int, seconds: float, key: str = "none") -> dict[str, Any]:
    wrk(base + PATH, WARMUP_S, key)
    pids = listeners(port)
    before = cpu_seconds(pids)
    figures = wrk(base + PATH, seconds, key)
    figures["cpu_ms_per_request"] = (cpu_seconds(pids) - before) * 1000 / figures["requests"]
    figures["processes"] = len(pids)
    return figures


@contextlib.contextmanager
def api(scope: Scope, port: int, source: Path, processes: int) -> Iterator[str]:
    """`pulse api` from ``source`` (a tree with the ``pulse`` package) on ``port``."""
    env = clean_env(scope.env() | {"PULSE_HTTP_HOST": "127.0.0.1", "PULSE_HTTP_PORT": str(port)})
    env["PYTHONPATH"] = str(source)
    if processes > 1:
        env["PULSE_API_PROCESSES"] = str(processes)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-api-") as cwd, log_file("api") as log:
        command = [sys.executable, "-m", "pulse", "api"]
        process = subprocess.Popen(command, env=env, cwd=cwd, stderr=log, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz", process)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while len(listeners(port)) < processes and time.monotonic() < deadline:
                time.sleep(0.1)  # every process up (the supervisor answers nothing itself)
            yield base
        finally:
            process.terminate()
            process.wait(60)


async def pulse(
    redis_url: str, admin_url: str, seconds: float, source: Path, processes: int = 1
) -> dict[str, Any]:
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 1)
        try:
            key = (await TenantStore(pool).create(f"bench-{scope.prefix}")).api_key
        finally:
            await pool.close()
        port = free_port()
        with api(scope, port, source, processes) as base:
            return measured(base, port, seconds, key)


async def bare(redis_url: str, mode: str, seconds: float) -> dict[str, Any]:
    stream = f"bench{secrets.token_hex(4)}:bare"
    try:
        with bare_xadd(redis_url, stream, mode) as base:
            return measured(base, int(base.rsplit(":", 1)[1]), seconds)
    finally:
        redis: Redis = Redis.from_url(redis_url)
        await redis.delete(stream)
        await redis.aclose()


@contextlib.contextmanager
def exported(ref: str) -> Iterator[Path]:
    """The ``pulse`` package of git revision ``ref``, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="pulse-before-") as folder:
        archive = subprocess.run(
            ["git", "archive", ref, "pulse", "sql"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tempfile.TemporaryFile() as tar:
            tar.write(archive)
            tar.seek(0)
            with tarfile.open(fileobj=tar) as opened:
                opened.extractall(folder, filter="data")
        yield Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="git revision to compare with (e.g. main)")
    parser.add_argument("--processes", type=int, default=2, help="also Pulse with N processes")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with servers() as found, contextlib.ExitStack() as stack:
        before = stack.enter_context(exported(args.before)) if args.before else None
        measures = plan(found.redis_url, found.database_url, args, before)
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
        for round_ in range(args.runs):
            for name, measure in measures.items():
                samples[name].append(measure())
                print(f"round {round_ + 1}: {line(name, samples[name][-1])}", file=sys.stderr)
    print(table(samples))
    return 0


def plan(
    redis_url: str, admin_url: str, args: argparse.Namespace, before: Path | None
) -> dict[str, Callable[[], dict[str, Any]]]:
    seconds = args.seconds
    measures: dict[str, Callable[[], dict[str, Any]]] = {
        "bare_one": lambda: asyncio.run(bare(redis_url, "one", seconds)),
        "bare_pipelined": lambda: asyncio.run(bare(redis_url, "pipelined", seconds)),
        "pulse": lambda: asyncio.run(pulse(redis_url, admin_url, seconds, ROOT)),
    }
    if before is not None:
        measures[f"pulse@{args.before}"] = lambda: asyncio.run(
            pulse(redis_url, admin_url, seconds, before)
        )
    if args.processes > 1:
        measures[f"pulse x{args.processes}"] = lambda: asyncio.run(
            pulse(redis_url, admin_url, seconds, ROOT, args.processes)
        )
    return measures


def line(name: str, figures: dict[str, Any]) -> str:
    return (
        f"{name}: {figures['rps']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms,"
        f" p99 {figures['p99_ms']:.1f} ms, {figures['cpu_ms_per_request']:.3f} ms CPU/request,"
        f" non-2xx {figures['non_2xx']}, socket errors {figures['socket_errors']}"
    )


def table(samples: dict[str, list[dict[str, Any]]]) -> str:
    """Medians, with each one's ratio to the bare one-XADD endpoint."""
    med = {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }
    reference = med["bare_one"]
    rows = [
        "| what | req/s | p50 ms | p99 ms | CPU ms/request | req/s vs bare one | CPU vs bare one |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        rows.append(
            f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f}"
            f" | {m['cpu_ms_per_request']:.3f} | {m['rps'] / reference['rps']:.2f}"
            f" | {m['cpu_ms_per_request'] / reference['cpu_ms_per_request']:.2f}x |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
