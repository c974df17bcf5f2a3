"""Celery's side of `make bench`: one worker process drains N no-op jobs; prints one JSON line.

Runs inside Celery's own virtual environment (bench/setup_venv.sh), not Pulse's:

    python drain.py --redis-url URL --jobs N [--prefetch 256]

One process: the ``solo`` pool runs each task in the worker's own process (prefork would add
child processes). Fastest documented settings for short tasks: results ignored, rate limits
off, a high prefetch multiplier, no gossip, mingle or heartbeat. Every key carries a random
prefix (kombu's ``global_keyprefix``) and is deleted afterwards. Enqueueing is setup and
untimed; the time runs from ``worker_ready`` until ``task_postrun`` has seen the last job.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any

import celery
import redis
from celery import Celery, signals
from celery.worker import state as worker_state


def make_app(url: str, prefix: str, prefetch: int) -> Celery:
    app = Celery("bench", broker=url, set_as_current=True)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_default_queue="bench",
        task_ignore_result=True,
        worker_disable_rate_limits=True,
        worker_prefetch_multiplier=prefetch,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


def cleanup(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def run_worker(app: Celery, jobs: int) -> tuple[float, int]:
    """Start a worker, return (seconds from ready to the last job done, jobs failed)."""
    marks: dict[str, float] = {}
    counts = {"left": jobs, "failed": 0}

    def ready(**_: Any) -> None:
        marks["ready"] = time.perf_counter()

    def postrun(state: str | None = None, **_: Any) -> None:
        counts["left"] -= 1
        counts["failed"] += state != "SUCCESS"
        if counts["left"] == 0:
            marks["done"] = time.perf_counter()
            worker_state.should_stop = 0  # a warm shutdown, taken by the consumer loop

    signals.worker_ready.connect(ready, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    worker = app.Worker(
        pool_cls="solo", concurrency=1, without_gossip=True, without_mingle=True,
        without_heartbeat=True, loglevel="WARNING", quiet=True,
    )  # fmt: skip
    worker.start()
    if "done" not in marks:
        raise RuntimeError(f"the worker stopped with {counts['left']} of {jobs} jobs left")
    return marks["done"] - marks["ready"], counts["failed"]


def main(url: str, jobs: int, prefetch: int) -> dict[str, Any]:
    prefix = f"bench{secrets.token_hex(4)}:"
    app = make_app(url, prefix, prefetch)

    @app.task(name="noop")
    def noop() -> None:
        return None

    try:
        with app.producer_or_acquire() as producer:
            for _ in range(jobs):
                noop.apply_async(producer=producer)
        seconds, failed = run_worker(app, jobs)
    finally:
        cleanup(url, prefix)
    if failed:
        raise RuntimeError(f"{failed} jobs failed")
    return {
        "peer": "celery",
        "version": celery.__version__,
        "jobs": jobs,
        "seconds": seconds,
        "rate": jobs / seconds,
        "settings": {"pool": "solo", "processes": 1, "prefetch_multiplier": prefetch},
    }


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    print(json.dumps(main(args.redis_url, args.jobs, args.prefetch)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
