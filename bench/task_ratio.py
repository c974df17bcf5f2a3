"""The task path against the notification path, one worker process each, tightly interleaved.

``python -m bench.task_ratio [--jobs N] [--runs R]``: R rounds of (notifications, no-op tasks with
results off, no-op tasks with results kept), each a drain of N queued jobs (``pulse_drain``,
``tasks_drain``: a fresh scope, the worker timed from its start until nothing is pending); prints
each run, then the medians and each task drain's ratio to the notification drain, in jobs/s and
in worker CPU per job (the figure that holds when other processes load the machine). Servers:
PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL, else the bench's own (bench/servers.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from bench import pulse_drain, tasks_drain
from bench.pulse_drain import DrainResult
from bench.servers import servers

KINDS = ("notifications", "tasks_results_off", "tasks_results_kept")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args(argv)
    with servers() as found:
        drains: dict[str, Callable[[], Coroutine[Any, Any, DrainResult]]] = {
            "notifications": lambda: pulse_drain.drain(
                found.redis_url, found.database_url, args.jobs
            ),
            "tasks_results_off": lambda: tasks_drain.drain_tasks(
                found.redis_url, found.database_url, args.jobs, results=False
            ),
            "tasks_results_kept": lambda: tasks_drain.drain_tasks(
                found.redis_url, found.database_url, args.jobs, results=True
            ),
        }
        samples: dict[str, list[DrainResult]] = {kind: [] for kind in KINDS}
        for round_ in range(args.runs):
            for kind in KINDS:
                result = uvloop.run(drains[kind]())
                samples[kind].append(result)
                print(f"round {round_ + 1}/{args.runs} {kind}: {result.rate:,.0f}/s,"
                      f" {result.cpu_us_per_job:.0f} µs CPU per job", flush=True)  # fmt: skip
    rate = {kind: statistics.median(r.rate for r in found) for kind, found in samples.items()}
    cpu = {
        kind: statistics.median(r.cpu_us_per_job for r in found) for kind, found in samples.items()
    }
    for kind in KINDS:
        print(f"median {kind}: {rate[kind]:,.0f}/s ({rate[kind] / rate['notifications']:.2f}x"
              f" the notifications'), {cpu[kind]:.0f} µs CPU per job (a notification's / this:"
              f" {cpu['notifications'] / cpu[kind]:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
