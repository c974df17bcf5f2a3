"""arq's side of `make bench`: one arq worker drains N no-op jobs; prints one JSON line.

Runs inside the arq virtual environment (bench/arq/setup_venv.sh), not Pulse's. Enqueueing is
setup and untimed; the time runs from the worker's start until the queue is empty (burst
mode). Every key it made is deleted afterwards, so a shared Redis is left as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import arq
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker

ENQUEUE_CHUNK = 500


async def noop(ctx: dict[str, Any]) -> None:
    return None


def redis_settings(url: str) -> RedisSettings:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return RedisSettings(unix_socket_path=parts.path)
    return RedisSettings.from_dsn(url)


async def enqueue(pool: ArqRedis, queue: str, run: str, jobs: int) -> None:
    for start in range(0, jobs, ENQUEUE_CHUNK):
        await asyncio.gather(
            *(
                pool.enqueue_job("noop", _job_id=f"{run}-{i}", _queue_name=queue)
                for i in range(start, min(start + ENQUEUE_CHUNK, jobs))
            )
        )


async def cleanup(pool: ArqRedis, queue: str, run: str) -> None:
    keys = [key async for key in pool.scan_iter(match=f"*{run}*")]
    if keys:
        await pool.delete(*keys)


async def main(url: str, jobs: int, max_jobs: int) -> dict[str, Any]:
    run = f"bench{secrets.token_hex(4)}"
    queue = f"arq:queue:{run}"
    settings = redis_settings(url)
    pool = await create_pool(settings, default_queue_name=queue)
    worker_settings = {
        "max_jobs": max_jobs,
        "burst": True,
        "keep_result": 0,
        "handle_signals": False,
        "log_results": False,
        "health_check_key": f"{queue}:health-check",
    }
    try:
        await enqueue(pool, queue, run, jobs)
        worker = Worker([noop], queue_name=queue, redis_pool=pool, **worker_settings)
        started = time.perf_counter()
        await worker.main()
        seconds = time.perf_counter() - started
        done = worker.jobs_complete
    finally:
        await cleanup(pool, queue, run)
        await pool.aclose()
    return {
        "peer": "arq",
        "version": arq.VERSION,
        "jobs": done,
        "seconds": seconds,
        "rate": done / seconds,
        "settings": worker_settings,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--max-jobs", type=int, default=1000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(args.redis_url, args.jobs, args.max_jobs))))
