"""SAQ's side of `make bench`: one worker drains N no-op jobs in this process; prints one JSON line.

Runs inside SAQ's own virtual environment (bench/setup_venv.sh), not Pulse's:

    python drain.py --redis-url URL --jobs N [--concurrency 100]

The queue has a random name; every key of it is deleted afterwards. Enqueueing is setup and
untimed (500 at a time); the time runs from the worker's start until an ``after_process`` hook
has seen the last job. Settings: uvloop, hiredis, no result kept beyond SAQ's minimum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any

import saq
import uvloop
from saq import Queue, Worker

ENQUEUE_CONCURRENCY = 500


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def enqueue(queue: Queue, jobs: int) -> None:
    for start in range(0, jobs, ENQUEUE_CONCURRENCY):
        count = min(ENQUEUE_CONCURRENCY, jobs - start)
        await asyncio.gather(*(queue.enqueue("noop") for _ in range(count)))


async def cleanup(queue: Any, name: str) -> None:
    keys = [key async for key in queue.redis.scan_iter(match=f"saq:*{name}*", count=1000)]
    if keys:
        await queue.redis.delete(*keys)


async def main(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    name = f"bench{secrets.token_hex(4)}"
    queue = Queue.from_url(url, name=name)
    done = asyncio.Event()
    left = [jobs]

    async def counted(ctx: dict[str, Any]) -> None:
        left[0] -= 1
        if left[0] == 0:
            done.set()

    try:
        await queue.connect()
        await enqueue(queue, jobs)
        worker = Worker(queue, [noop], concurrency=concurrency, after_process=counted)
        started = time.perf_counter()
        task = asyncio.create_task(worker.start())
        await asyncio.wait_for(done.wait(), 600)
        seconds = time.perf_counter() - started
        await worker.stop()
        task.cancel()
    finally:
        await cleanup(queue, name)
        await queue.disconnect()
    return {
        "peer": "saq",
        "version": saq.__version__,
        "jobs": jobs,
        "seconds": seconds,
        "rate": jobs / seconds,
        "settings": {"concurrency": concurrency, "event_loop": "uvloop"},
    }


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(main(args.redis_url, args.jobs, args.concurrency))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
