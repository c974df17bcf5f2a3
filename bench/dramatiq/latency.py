"""Dramatiq's enqueue→start latency for `make bench`: jobs sent on schedule at a steady rate
(open loop) to one worker process; prints one JSON line with p50/p99 in milliseconds.

    python latency.py --redis-url URL --rate 200 --seconds 10

This process enqueues; a worker process of its own (this script with ``--worker``) records,
for each job, its start time minus the enqueue time carried in its argument, and writes the
list to a file once it has seen every job. The first second's jobs are a warm-up, not counted.
Worker: 8 threads (the default), ``worker_timeout`` 100 ms (the idle poll's longest backoff).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

THREADS = 8
WORKER_TIMEOUT_MS = 100


def make_actor(broker: RedisBroker, record: Any) -> Any:
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="bench", max_retries=0, actor_name="stamp")
    def stamp(enqueued_at: float) -> None:
        record(time.time() - enqueued_at)

    return stamp


def worker(url: str, namespace: str, count: int, out: str) -> None:
    latencies: list[float] = []
    lock, done = threading.Lock(), threading.Event()

    def record(seconds: float) -> None:
        with lock:
            latencies.append(seconds)
            if len(latencies) == count:
                done.set()

    broker = RedisBroker(url=url, namespace=namespace)
    make_actor(broker, record)
    running = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    running.start()
    print("ready", flush=True)
    done.wait(600)
    Path(out).write_text(json.dumps(latencies))
    running.stop()


def send(url: str, namespace: str, rate: float, count: int) -> None:
    stamp = make_actor(RedisBroker(url=url, namespace=namespace), lambda _: None)
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        stamp.send(time.time())


def percentiles(latencies: list[float], warmup: int) -> dict[str, float]:
    counted = latencies[warmup:] if len(latencies) > warmup else latencies
    cuts = statistics.quantiles([s * 1000 for s in counted], n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "count": len(counted)}


def main(url: str, rate: float, seconds: float) -> dict[str, Any]:
    namespace = f"bench{secrets.token_hex(4)}"
    count = max(10, round(rate * seconds))
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "latencies.json")
        args = ["--worker", "--redis-url", url, "--namespace", namespace, "--count", str(count)]
        child = subprocess.Popen(
            [sys.executable, __file__, *args, "--out", out], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the Dramatiq worker did not start")
            send(url, namespace, rate, count)
            child.wait(120)
            latencies = json.loads(Path(out).read_text())
        finally:
            child.kill()
            cleanup(url, namespace)
    figures = percentiles(latencies, round(rate))  # start order: close to send order
    return {"peer": "dramatiq", "version": dramatiq.__version__, "rate": rate} | figures


def cleanup(url: str, namespace: str) -> None:
    broker = RedisBroker(url=url, namespace=namespace)
    keys = list(broker.client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        broker.client.delete(*keys)
    broker.close()


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--namespace")
    parser.add_argument("--count", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        worker(args.redis_url, args.namespace, args.count, args.out)
        return 0
    print(json.dumps(main(args.redis_url, args.rate, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
