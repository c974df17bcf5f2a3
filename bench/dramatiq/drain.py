"""Dramatiq's side of `make bench`: one worker process drains N no-op jobs; prints one JSON line.

Runs inside Dramatiq's own virtual environment (bench/setup_venv.sh), not Pulse's:

    python drain.py --redis-url URL --jobs N [--threads 8]

Keys live under a random namespace, deleted afterwards. Enqueueing is setup and untimed; the
time runs from the worker's start until a middleware has seen the last job processed.
Settings: Dramatiq's defaults (8 worker threads, prefetch twice that), the default middleware.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware


class Countdown(Middleware):
    """Sets ``done`` once ``jobs`` messages have been processed (successfully)."""

    def __init__(self, jobs: int) -> None:
        self.left = jobs
        self.failed = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        with self.lock:
            self.left -= 1
            self.failed += exception is not None
            if self.left == 0:
                self.done.set()


def cleanup(broker: RedisBroker, namespace: str) -> None:
    keys = list(broker.client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        broker.client.delete(*keys)


def main(url: str, jobs: int, threads: int) -> dict[str, Any]:
    namespace = f"bench{secrets.token_hex(4)}"
    broker = RedisBroker(url=url, namespace=namespace)
    countdown = Countdown(jobs)
    broker.add_middleware(countdown)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="bench", max_retries=0)
    def noop() -> None:
        return None

    try:
        for _ in range(jobs):
            noop.send()
        worker = dramatiq.Worker(broker, worker_threads=threads)
        started = time.perf_counter()
        worker.start()
        if not countdown.done.wait(600):
            raise RuntimeError(f"{countdown.left} of {jobs} jobs left after 600 s")
        seconds = time.perf_counter() - started
        worker.stop()
    finally:
        cleanup(broker, namespace)
        broker.close()
    if countdown.failed:
        raise RuntimeError(f"{countdown.failed} jobs failed")
    return {
        "peer": "dramatiq",
        "version": dramatiq.__version__,
        "jobs": jobs,
        "seconds": seconds,
        "rate": jobs / seconds,
        "settings": {"worker_threads": threads, "processes": 1, "middleware": "default"},
    }


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(main(args.redis_url, args.jobs, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
