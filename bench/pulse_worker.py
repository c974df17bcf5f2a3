"""One Pulse worker process for the bench: ``python -m bench.pulse_worker`` (settings from PULSE_*).

It is the worker of ``pulse worker`` with the log channel kept quiet (no line per notification).
It connects, prints ``ready`` and waits for a line on stdin before it starts, so the bench times
the work and not the interpreter's start; it stops gracefully on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from pulse.channels.registry import build_channels
from pulse.cli.serve import backends
from pulse.config import load_settings
from pulse.metrics import Metrics
from pulse.runtime.task_host import load_registries
from pulse.runtime.worker import build_worker


async def main() -> None:
    settings = load_settings(dotenv_path=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with backends(settings) as (redis, pool):
        channels = build_channels(settings, quiet_log=True)
        tasks = load_registries(settings.tasks)  # PULSE_TASKS: the task bench's no-op task
        worker = build_worker(
            settings, redis, pool, channels, Metrics(), tasks, serve_channels=not tasks
        )
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        watcher = loop.run_in_executor(None, sys.stdin.readline)
        watcher.add_done_callback(lambda _: stop.set())  # stdin closed: the bench is gone
        await worker.run(stop)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
