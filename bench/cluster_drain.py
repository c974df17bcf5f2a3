"""Drain rate on one Redis against a Redis Cluster with the queue split into partitions.

``make scaling-cluster`` (or ``python -m bench.cluster_drain [--jobs N] [--runs 3] [--workers
1,2]``): the drain of ``bench.pulse_drain`` (N log-channel notifications committed and streamed
as the API leaves them, then W worker processes started at once, timed until every partition's
stream is empty and nothing is pending, every notification then checked ``delivered``), on four
setups started by the bench on loopback (``tests/cluster_lab.py``, no persistence, no replicas):

- ``redis P=1``: one plain ``redis-server``, one partition (the baseline);
- ``cluster 1 master P=1`` and ``P=3``: a one-master cluster (what the cluster client costs);
- ``cluster 3 masters P=3``: three masters, a partition on each.

The setups are interleaved run by run and each point is the median of the runs; the rates are
also given relative to the baseline of the same run. PostgreSQL is the one named by
``PULSE_BENCH_DATABASE_URL`` (default: the local server as ``postgres``). Every process shares
this machine's cores: see docs/scaling.md for what the figures can and cannot say.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.processes import pulse_worker
from bench.pulse_drain import _verify_audit, enqueue_bulk, wait_acknowledged
from bench.scope import fresh_scope
from pulse.queue.client import open_redis
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool
from tests.cluster_lab import running_cluster, running_redis

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Setup:
    name: str
    masters: int  # 0: a plain Redis
    partitions: int


SETUPS = (
    Setup("redis P=1", 0, 1),
    Setup("cluster 1 master P=1", 1, 1),
    Setup("cluster 1 master P=3", 1, 3),
    Setup("cluster 3 masters P=3", 3, 3),
)


@contextlib.contextmanager
def redis_of(setup: Setup) -> Iterator[str]:
    if setup.masters == 0:
        with running_redis() as url:
            yield url
    else:
        with running_cluster(masters=setup.masters, replicas=0) as lab:
            yield lab.url


async def drain_once(setup: Setup, url: str, jobs: int, workers: int) -> float:
    """One timed drain (notifications per second) in a fresh scope."""
    cluster = setup.masters > 0
    admin_url = os.environ.get("PULSE_BENCH_DATABASE_URL", ADMIN_URL)
    async with fresh_scope(url, admin_url, cluster=cluster) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis = open_redis(url, cluster=cluster)
        keys = QueueKeys(scope.prefix, partitions=setup.partitions)
        env = {"PULSE_REDIS_PARTITIONS": str(setup.partitions)}
        try:
            await enqueue_bulk(pool, redis, scope.prefix, jobs, partitions=setup.partitions)
            with contextlib.ExitStack() as stack:
                gos = [stack.enter_context(pulse_worker(scope, env)) for _ in range(workers)]
                started = min(go() for go in gos)
                for part in keys.partition_keys():  # whichever lane (tenants' by default)
                    await wait_acknowledged(redis, part)
                seconds = time.perf_counter() - started
            await _verify_audit(pool, jobs)
            return jobs / seconds
        finally:
            await redis.aclose()
            await pool.close()


async def main(jobs: int, runs: int, worker_counts: list[int]) -> None:
    points = [(setup, workers) for workers in worker_counts for setup in SETUPS]
    rates: dict[tuple[str, int], list[float]] = {(s.name, w): [] for s, w in points}
    ratios: dict[tuple[str, int], list[float]] = {(s.name, w): [] for s, w in points}
    for run in range(runs):
        for workers in worker_counts:
            baseline = 0.0  # the first setup's, one Redis, this run and worker count
            for setup in SETUPS:
                with redis_of(setup) as url:
                    rate = await drain_once(setup, url, jobs, workers)
                baseline = baseline or rate
                rates[setup.name, workers].append(rate)
                ratios[setup.name, workers].append(rate / baseline)
                print(
                    f"run {run + 1}, {workers} worker(s): {setup.name}: {rate:,.0f}/s"
                    f" ({rate / baseline:.2f}x)",
                    flush=True,
                )
    print(f"\n{jobs:,} notifications per run, median of {runs} runs:\n")
    print("| setup | workers | drain (notifications/s) | vs one Redis, same run |")
    print("|---|---:|---:|---:|")
    for setup, workers in points:
        rate = statistics.median(rates[setup.name, workers])
        ratio = statistics.median(ratios[setup.name, workers])
        print(f"| {setup.name} | {workers} | {rate:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker process counts, e.g. 1,2,4")
    arguments = parser.parse_args()
    counts = [int(count) for count in arguments.workers.split(",")]
    asyncio.run(main(arguments.jobs, arguments.runs, counts))
