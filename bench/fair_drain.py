"""One worker's drain with fairness between tenants on (the default) against the code before it.

``before``: a source tree of another revision (``--before``, default the merge base with
``main``: the shared lane and the plain fetcher), its worker draining N notifications appended
to the shared priority stream. ``fair``: this tree's worker (the fair fetcher) draining the same
N appended to their tenants' sub-streams, as the API appends them by default. Each with one
tenant and with many (the N split evenly). Interleaved (before, fair, before, fair, ...) and
the median of ``--runs`` taken; what counts is the ratio, the machine being shared.

    .venv/bin/python -m bench.fair_drain [--jobs 20000] [--tenants 1,50] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import uvloop
from redis.asyncio import Redis

from bench.fairness import enqueue_for
from bench.processes import ROOT, pulse_worker
from bench.pulse_drain import wait_acknowledged
from bench.scope import fresh_scope
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool

MODES = ("before", "fair")


async def drain(
    redis_url: str, admin_url: str, jobs: int, tenants: int, mode: str, before: Path
) -> tuple[float, float]:
    """Seconds and worker CPU seconds to drain ``jobs`` notifications of ``tenants`` tenants."""
    fair = mode == "fair"
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis: Redis = Redis.from_url(redis_url)
        try:
            for t in range(tenants):
                share = jobs // tenants + (1 if t < jobs % tenants else 0)
                tenant = f"t{t}-{scope.prefix}"
                await enqueue_for(pool, redis, scope.prefix, tenant, share, fair=fair)
            root = ROOT if fair else before
            with pulse_worker(scope, {"PULSE_TENANT_FAIRNESS": str(fair).lower()}, root) as go:
                cpu = go.cpu_s()
                started = go()
                await wait_acknowledged(redis, QueueKeys(scope.prefix))
                seconds = time.perf_counter() - started
                cpu_s = go.cpu_s() - cpu
            await _check_delivered(pool, jobs)
            return seconds, cpu_s
        finally:
            await redis.aclose()
            await pool.close()


async def _check_delivered(pool: asyncpg.Pool, jobs: int) -> None:
    done = await pool.fetchval("SELECT count(*) FROM notifications WHERE status = 'delivered'")
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} delivered")


def before_tree(rev: str, into: Path) -> Path:
    """The source of ``rev`` (pulse, bench, sql), unpacked into ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "pulse", "bench", "sql"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--tenants", default="1,50")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=None, help="revision to compare with")
    args = parser.parse_args()
    rev = (
        args.before
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    redis_url = os.environ.get("PULSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin_url = os.environ.get(
        "PULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    counts = [int(n) for n in args.tenants.split(",")]
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pulse-before-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        before = before_tree(rev, Path(tmp))
        for run in range(args.runs):
            for tenants in counts:
                for mode in MODES:
                    took = runner.run(drain(redis_url, admin_url, args.jobs, tenants, mode, before))
                    results.setdefault((tenants, mode), []).append(took)
                    rate = args.jobs / took[0]
                    print(f"run {run + 1}: {tenants} tenant(s), {mode}: {rate:,.0f}/s", flush=True)
    print(f"\n{args.jobs} notifications, one worker; before = {rev[:12]}; median of {args.runs}")
    print("| tenants | before /s | fair /s | fair / before | CPU µs/job before | fair |")
    print("|---|---|---|---|---|---|")
    for tenants in counts:
        rates = {
            m: statistics.median(args.jobs / s for s, _ in results[(tenants, m)]) for m in MODES
        }
        cpu = {
            m: statistics.median(c / args.jobs * 1e6 for _, c in results[(tenants, m)])
            for m in MODES
        }
        print(
            f"| {tenants} | {rates['before']:,.0f} | {rates['fair']:,.0f} |"
            f" {rates['fair'] / rates['before']:.2f} | {cpu['before']:.0f} | {cpu['fair']:.0f} |"
        )


if __name__ == "__main__":
    main()
