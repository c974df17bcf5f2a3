"""The aiohttp application factory: routes, middlewares and the resources they own.

``cleanup_ctx`` owns the PostgreSQL pool and the Redis client, so they open when the app starts
and close when it stops, in tests and in production alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from pulse.config import Settings
from pulse.core.ports import ChannelSpec
from pulse.core.routes import accepting, catalog, configured, configured_routes
from pulse.http import (
    admin,
    batches,
    dashboard,
    dead_letters,
    health,
    jobs,
    limits,
    notification_queries,
    notifications,
    openapi,
    provider_callbacks,
    provider_routes,
    receipts,
    recipient_caps,
    schedules,
    scheduling,
    tenant_weights,
    webhook_secrets,
)
from pulse.http.auth import auth_middleware, key_cache
from pulse.http.edges import cors_middleware, echo_request_id, request_id_middleware
from pulse.http.problems import CLIENT_CLOSED_REQUEST, Handler, problem_middleware
from pulse.http.protocol import add_unrouted, route_name, with_expect
from pulse.http.state import (
    ACCEPT,
    BATCHES,
    DEAD_LETTERS,
    DEFAULT_ROUTES,
    DUE_INDEX,
    IDEMPOTENCY,
    METRICS,
    NOTIFICATIONS,
    POOL,
    PROVIDERS,
    PUBLISHER,
    QUEUE_STATS,
    RECEIPTS,
    REDIS,
    ROUTES,
    SCHEDULED,
    SETTINGS,
    SPECS,
    TENANTS,
)
from pulse.metrics import Metrics
from pulse.queue.client import open_configured
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.due import DueIndex
from pulse.queue.keys import keys_for
from pulse.queue.live_counts import LiveCounts
from pulse.queue.partitions import served_if_reachable
from pulse.queue.publisher import Publisher
from pulse.queue.stats import QueueStats
from pulse.services.accept import AcceptService
from pulse.services.dead_letters import DeadLetters
from pulse.store.batches import BatchStore
from pulse.store.dead_letters import DeadLetterStore
from pulse.store.idempotency import IdempotencyStore
from pulse.store.notifications import NotificationStore
from pulse.store.pool import create_pool
from pulse.store.receipts import ReceiptStore
from pulse.store.routes import RouteStore
from pulse.store.scheduled import ScheduledStore
from pulse.store.tenants import TenantStore

logger = logging.getLogger("pulse.http.app")
ROUTE_TABLES = (
    health.routes,
    batches.routes,
    notification_queries.routes,
    notifications.routes,
    scheduling.routes,
    dead_letters.routes,
    admin.routes,
    openapi.routes,
    provider_callbacks.routes,
    provider_routes.routes,
    receipts.routes,
    webhook_secrets.routes,
    schedules.routes,
    limits.routes,
    recipient_caps.routes,
    tenant_weights.routes,
)
IDEMPOTENCY_PURGE_INTERVAL_S = 60.0


def create_app(
    settings: Settings, specs: Mapping[str, ChannelSpec], metrics: Metrics | None = None
) -> web.Application:
    app = web.Application(
        client_max_size=max(settings.max_body_bytes, settings.max_batch_body_bytes),
        middlewares=[
            request_id_middleware,
            cors_middleware,
            _timing_middleware,
            problem_middleware,
            auth_middleware,
        ],
    )
    app.on_response_prepare.append(echo_request_id)  # streams are prepared inside the handler
    app[SETTINGS] = settings
    app[PROVIDERS] = configured(specs, catalog(specs, settings.providers))
    app[SPECS] = accepting(specs, app[PROVIDERS])
    app[DEFAULT_ROUTES] = configured_routes(settings.routes, specs, settings.providers)
    app[METRICS] = metrics or Metrics()
    app[METRICS].collect_queue_state()  # the API process alone exports the queue's state
    app.cleanup_ctx.append(_backends)
    app.cleanup_ctx.append(key_cache)
    app.cleanup_ctx.append(limits.rate_limits)
    for table in ROUTE_TABLES:
        app.add_routes(with_expect(table))
    app.add_routes(with_expect([web.static("/docs/assets", openapi.swagger_assets())]))
    dashboard.setup(app)
    jobs.setup(app)  # user tasks: /api/jobs
    add_unrouted(app)
    return app


async def _backends(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(
        settings.require_database_url(),
        settings.db_pool_min,
        settings.db_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
    )
    redis = open_configured(settings)
    app[POOL] = pool
    app[REDIS] = redis
    app[NOTIFICATIONS] = NotificationStore(pool)
    app[TENANTS] = TenantStore(pool)
    keys = await served_if_reachable(redis, keys_for(settings))  # retiring partitions too
    app[PUBLISHER] = Publisher(redis, keys, fair=settings.tenant_fairness)
    app[DEAD_LETTERS] = DeadLetters(
        DeadLetterStore(pool), DeadLetterStream(redis, keys), app[PUBLISHER], app[METRICS]
    )
    app[QUEUE_STATS] = QueueStats(redis, keys)
    app[BATCHES] = BatchStore(pool)
    app[ROUTES] = RouteStore(pool)
    app[RECEIPTS] = ReceiptStore(pool)
    app[IDEMPOTENCY] = IdempotencyStore(pool, settings.idempotency_retention_s)
    app[DUE_INDEX] = DueIndex(redis, keys, fair=settings.tenant_fairness)
    app[SCHEDULED] = ScheduledStore(pool)
    app[ACCEPT] = AcceptService(
        app[NOTIFICATIONS], app[BATCHES], app[IDEMPOTENCY], app[PUBLISHER], app[METRICS],
        app[DUE_INDEX],
    )  # fmt: skip
    cleanup = asyncio.create_task(_purge_idempotency_keys(app[IDEMPOTENCY]))
    live = LiveCounts(redis, keys)  # no worker removes a partition this API appends to
    alive = asyncio.create_task(live.run())
    try:
        yield
    finally:
        for task in (cleanup, alive):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await live.leave()
        await redis.aclose()
        await pool.close()


async def _purge_idempotency_keys(store: IdempotencyStore) -> None:
    """The cleanup loop: expired Idempotency-Key records are deleted, once a minute."""
    while True:
        try:
            purged = await store.purge_expired()
            if purged:
                logger.info("purged %d expired idempotency keys", purged)
        except Exception as exc:  # an outage, or migrations not applied yet: try again later
            logger.warning("could not purge idempotency keys: %s", exc)
        await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_S)


@web.middleware
async def _timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:  # the client left (test servers cancel its handler)
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        name = route_name(request)
        request.app[METRICS].http_seconds_of(request.method, name, str(status)).observe(
            time.perf_counter() - started
        )
