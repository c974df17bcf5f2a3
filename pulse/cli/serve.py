"""Long-running processes (API, worker) and the signal handling they share.

First SIGTERM, SIGINT or SIGHUP (its terminal closed): graceful stop (stop fetching, finish
in-flight work within the grace period). A second one: stop at once; unacknowledged entries stay
pending in Redis.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
import uvloop
from aiohttp import web
from prometheus_client import start_http_server
from redis.asyncio import Redis

from pulse.channels.registry import build_channels, channel_specs
from pulse.cli.ports import PortInUse, is_port_in_use
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.http.protocol import ProtocolLogger
from pulse.metrics import Metrics
from pulse.queue.client import open_configured
from pulse.queue.keys import keys_for
from pulse.queue.partitions import served_keys
from pulse.runtime.task_host import load_registries
from pulse.runtime.worker import build_worker
from pulse.store.pool import create_pool
from pulse.tasks import Tasks

logger = logging.getLogger("pulse.cli.serve")
T = TypeVar("T")
# SIGHUP too: closing the terminal must stop a process as Ctrl-C does, not kill it outright
# (which would leave `pulse dev`'s embedded PostgreSQL running).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GC_YOUNG_THRESHOLD = 10_000  # net container allocations between young collections (was 700)


def run(main: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run a coroutine on uvloop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second %s: stopping at once", signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()
            return
        logger.info("%s: stopping gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


@asynccontextmanager
async def api_site(
    settings: Settings, metrics: Metrics, *, reuse_port: bool = False
) -> AsyncIterator[web.AppRunner]:
    """The API on its port. ``reuse_port`` (SO_REUSEPORT) only for the children of one ``pulse
    api --processes N`` supervisor, which holds the port for them (``pulse.cli.ports``); any
    other process fails with ``PortInUse`` on a taken port instead of sharing it."""
    app = create_app(settings, channel_specs(settings), metrics)
    # A client's malformed request is logged as one line, not a traceback (ProtocolLogger).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=ProtocolLogger())
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_port=reuse_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if is_port_in_use(exc):
            raise PortInUse(settings.http_host, settings.http_port) from None
        raise
    logger.info("API listening on http://%s:%d", settings.http_host, settings.http_port)
    try:
        yield runner
    finally:
        await runner.cleanup()


@asynccontextmanager
async def backends(settings: Settings) -> AsyncIterator[tuple[Redis, asyncpg.Pool]]:
    pool = await create_pool(
        settings.require_database_url(),
        settings.db_pool_min,
        settings.db_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
    )
    redis = open_configured(settings, blocking_reads=True)
    try:
        yield redis, pool
    except BaseException:
        pool.terminate()  # stopping at once: do not wait for queries in flight
        raise
    finally:
        await redis.aclose()
        if not pool.is_closing():
            await pool.close()


async def serve_api(settings: Settings, *, reuse_port: bool = False) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with api_site(settings, Metrics(), reuse_port=reuse_port):
        settle_heap()
        await stop.wait()


def settle_heap() -> None:
    """Once started: what start-up made (modules, pools, the app) lives as long as the process,
    so it leaves the collector's view (``gc.freeze``), and the youngest generation is collected
    every ``GC_YOUNG_THRESHOLD`` net allocations instead of 700. Under wrk on the accept path,
    the collector's passes over start-up's objects took about a quarter of the API's time and
    set its p99; after this, almost none run (a request frees nearly all it allocates)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def serve_worker(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    tasks: list[Tasks] | None = None,
    serve_channels: bool = True,
) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_worker(
        settings, stop, metrics or Metrics(), serve_metrics=True, tasks=tasks,
        serve_channels=serve_channels,
    )  # fmt: skip


async def run_worker(
    settings: Settings, stop: asyncio.Event, metrics: Metrics, *, serve_metrics: bool,
    tasks: list[Tasks] | None = None, serve_channels: bool = True,
) -> None:  # fmt: skip
    if serve_metrics and settings.worker_metrics_port:
        # On the API's host setting: loopback by default, 0.0.0.0 where Prometheus scrapes.
        start_http_server(
            settings.worker_metrics_port, settings.http_host, registry=metrics.registry
        )
    async with backends(settings) as (redis, pool):
        channels = build_channels(settings)
        if tasks is None:  # `pulse dev`: the modules of PULSE_TASKS
            tasks = load_registries(settings.tasks)
        keys = await served_keys(redis, keys_for(settings))  # retiring partitions too
        worker = build_worker(
            settings, redis, pool, channels, metrics, tasks, serve_channels=serve_channels,
            keys=keys,
        )  # fmt: skip
        await worker.run(stop)
