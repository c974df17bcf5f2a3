"""SAQ's enqueue→start latency for `make bench`: jobs sent on schedule at a steady rate (open
loop) to one worker process; prints one JSON line with p50/p99 in milliseconds.

    python latency.py --redis-url URL --rate 200 --seconds 10

This process enqueues; a worker process of its own (this script with ``--worker``) records,
for each job, its start time minus the enqueue time carried in its argument, and writes the
list to a file once it has seen every job. The first second's jobs are a warm-up, not counted.
Worker: SAQ's defaults (concurrency 10), uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import saq
import uvloop
from saq import Queue, Worker

LATENCIES: list[float] = []  # the worker's records, in start order


async def stamp(ctx: dict[str, Any], *, enqueued_at: float) -> None:
    LATENCIES.append(time.time() - enqueued_at)


async def worker(url: str, name: str, count: int, out: str) -> None:
    async def counted(ctx: dict[str, Any]) -> None:
        if len(LATENCIES) >= count:
            done.set()

    done = asyncio.Event()
    queue = Queue.from_url(url, name=name)
    await queue.connect()
    running = Worker(queue, [stamp], after_process=counted)
    task = asyncio.create_task(running.start())
    print("ready", flush=True)
    await asyncio.wait_for(done.wait(), 120)
    await asyncio.to_thread(Path(out).write_text, json.dumps(LATENCIES))
    await running.stop()
    task.cancel()


async def send(url: str, name: str, rate: float, count: int) -> None:
    queue = Queue.from_url(url, name=name)
    await queue.connect()
    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(queue.enqueue("stamp", enqueued_at=time.time())))
    await asyncio.gather(*tasks)
    await queue.disconnect()


async def cleanup(queue: Any, name: str) -> None:
    keys = [key async for key in queue.redis.scan_iter(match=f"saq:*{name}*", count=1000)]
    if keys:
        await queue.redis.delete(*keys)


def percentiles(latencies: list[float], warmup: int) -> dict[str, float]:
    counted = latencies[warmup:] if len(latencies) > warmup else latencies
    cuts = statistics.quantiles([s * 1000 for s in counted], n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "count": len(counted)}


def main(url: str, rate: float, seconds: float) -> dict[str, Any]:
    name = f"bench{secrets.token_hex(4)}"
    count = max(10, round(rate * seconds))
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "latencies.json")
        args = ["--worker", "--redis-url", url, "--name", name, "--count", str(count)]
        child = subprocess.Popen(
            [sys.executable, __file__, *args, "--out", out], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the SAQ worker did not start")
            uvloop.run(send(url, name, rate, count))
            child.wait(120)
            latencies = json.loads(Path(out).read_text())
        finally:
            child.kill()
            uvloop.run(_cleanup(url, name))
    figures = percentiles(latencies, round(rate))  # start order: close to send order
    return {"peer": "saq", "version": saq.__version__, "rate": rate} | figures


async def _cleanup(url: str, name: str) -> None:
    queue = Queue.from_url(url, name=name)
    await cleanup(queue, name)
    await queue.disconnect()


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--name")
    parser.add_argument("--count", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        uvloop.run(worker(args.redis_url, args.name, args.count, args.out))
        return 0
    print(json.dumps(main(args.redis_url, args.rate, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
