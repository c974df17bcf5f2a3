"""Liveness, readiness and metrics: unauthenticated, for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from pulse.http.problems import problem
from pulse.http.state import METRICS, POOL, QUEUE_STATS, REDIS
from pulse.store.migrations import pending_versions

logger = logging.getLogger("pulse.http.health")
routes = web.RouteTableDef()
CHECK_TIMEOUT_S = 2.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process runs and its loop answers; says nothing of Redis or PostgreSQL on purpose."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks = {
        "redis": await _check(_redis_ok(request)),
        "postgres": await _check(_postgres_ok(request)),
    }
    if all(value == "ok" for value in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    return problem(503, "not ready", checks=checks, headers={"Retry-After": "1"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """This process's metrics, and the queue's state read from Redis now (at most once a
    second, whoever asks); with Redis unreachable, ``pulse_queue_stats_up`` 0 and no queue
    gauges rather than stale ones."""
    exported = request.app[METRICS]
    queue = exported.collect_queue_state()
    try:
        queue.show(await asyncio.wait_for(request.app[QUEUE_STATS].snapshot(), CHECK_TIMEOUT_S))
    except Exception as exc:  # an outage, a timeout: the scrape still answers
        logger.warning("could not read the queue's state: %s: %s", type(exc).__name__, exc)
        queue.show(None)
    body = exported.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _check(probe: asyncio.Future[str] | object) -> str:
    try:
        return str(await asyncio.wait_for(probe, CHECK_TIMEOUT_S))  # type: ignore[arg-type]
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


async def _redis_ok(request: web.Request) -> str:
    await request.app[REDIS].ping()
    return "ok"


async def _postgres_ok(request: web.Request) -> str:
    async with request.app[POOL].acquire() as conn:
        pending = await pending_versions(conn)
    return "ok" if not pending else f"migrations pending: {pending}"
