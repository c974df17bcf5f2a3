"""arq's side of `make bench`: one arq worker drains N no-op jobs; prints one JSON line.

Runs inside the arq virtual environment (bench/arq/setup_venv.sh), not Pulse's:

    python drain.py --redis-url URL --jobs N [--max-jobs 1000] [--queue-name PREFIX]

The jobs go to a queue of their own (PREFIX plus a random suffix), so a shared Redis is not
disturbed. Enqueueing is setup and untimed. The time runs from the worker's start until every
job is complete (burst mode: the worker returns once the queue is empty and its tasks are done).
Afterwards every key the run made is deleted, so the Redis server is left as it was found.

URLs: redis://[user:password@]host:port/DB, rediss://..., and unix:///path/to/redis.sock (with
?db=N for a database other than 0), all through arq's RedisSettings.from_dsn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any

import arq
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.worker import Worker

ENQUEUE_CONCURRENCY = 500  # enqueue_job is one WATCH/MULTI transaction per job; run 500 at once
DELETE_CHUNK = 1000
POLL_DELAY_S = 0.05  # arq's default is 0.5 s; a burst worker sleeps up to this between reads


async def noop(ctx: dict[str, Any]) -> None:
    return None


def redis_settings(url: str) -> RedisSettings:
    # from_dsn accepts redis://, rediss:// and unix:// (socket path; database from ?db=N).
    return RedisSettings.from_dsn(url)


def job_ids(run: str, jobs: int) -> Iterator[str]:
    return (f"{run}-{i}" for i in range(jobs))


async def enqueue(pool: ArqRedis, queue: str, run: str, jobs: int) -> None:
    ids = list(job_ids(run, jobs))
    for start in range(0, jobs, ENQUEUE_CONCURRENCY):
        made = await asyncio.gather(
            *(
                pool.enqueue_job("noop", _job_id=job_id, _queue_name=queue)
                for job_id in ids[start : start + ENQUEUE_CONCURRENCY]
            )
        )
        if any(job is None for job in made):
            raise RuntimeError("a job id already existed: the queue was not fresh")


def created_keys(queue: str, run: str, jobs: int) -> Iterator[str]:
    yield queue
    yield queue + health_check_key_suffix
    for job_id in job_ids(run, jobs):
        for prefix in (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix):
            yield prefix + job_id


async def cleanup(pool: ArqRedis, queue: str, run: str, jobs: int) -> None:
    keys = list(created_keys(queue, run, jobs))
    for start in range(0, len(keys), DELETE_CHUNK):
        await pool.delete(*keys[start : start + DELETE_CHUNK])
    # Belt and braces: nothing else of this run's (its token is random) may remain.
    leftovers = [key async for key in pool.scan_iter(match=f"*{run}*", count=1000)]
    if leftovers:
        await pool.delete(*leftovers)


async def main(url: str, jobs: int, max_jobs: int, queue_prefix: str) -> dict[str, Any]:
    run = f"bench{secrets.token_hex(4)}"
    queue = f"{queue_prefix}-{run}"
    pool = await create_pool(redis_settings(url), default_queue_name=queue)
    settings: dict[str, Any] = {
        "max_jobs": max_jobs,
        "burst": True,
        "poll_delay": POLL_DELAY_S,
        "keep_result": 0,
        "handle_signals": False,
    }
    try:
        if await pool.exists(queue):
            raise RuntimeError(f"queue {queue} already exists")
        await enqueue(pool, queue, run, jobs)
        worker = Worker([noop], queue_name=queue, redis_pool=pool, **settings)
        started = time.perf_counter()
        await worker.main()
        seconds = time.perf_counter() - started
        settings["queue_read_limit"] = worker.queue_read_limit
    finally:
        await cleanup(pool, queue, run, jobs)
        await pool.aclose()
    if worker.jobs_complete != jobs or worker.jobs_failed or worker.jobs_retried:
        raise RuntimeError(
            f"{worker.jobs_complete} of {jobs} jobs complete,"
            f" {worker.jobs_failed} failed, {worker.jobs_retried} retried"
        )
    return {
        "peer": "arq",
        "version": arq.VERSION,
        "jobs": jobs,
        "seconds": seconds,
        "rate": jobs / seconds,
        "settings": settings,
    }


def loop_factory() -> tuple[Any, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--max-jobs", type=int, default=1000)
    parser.add_argument(
        "--queue-name",
        default="arq:queue:bench",
        help="queue name prefix; a random suffix is appended so every run gets a fresh queue",
    )
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    factory, loop_name = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main(args.redis_url, args.jobs, args.max_jobs, args.queue_name))
    result["settings"]["event_loop"] = loop_name
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
