"""Typed application and request state (aiohttp ``AppKey``), shared by the HTTP modules."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.ports import ChannelSpec
from pulse.metrics import Metrics
from pulse.queue.due import DueIndex
from pulse.queue.publisher import Publisher
from pulse.queue.stats import QueueStats
from pulse.services.accept import AcceptService
from pulse.services.dead_letters import DeadLetters
from pulse.store.batches import BatchStore
from pulse.store.idempotency import IdempotencyStore
from pulse.store.notifications import NotificationStore
from pulse.store.receipts import ReceiptStore
from pulse.store.routes import RouteStore
from pulse.store.scheduled import ScheduledStore
from pulse.store.tenants import Principal, TenantStore

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
# As the API checks requests: ``missing`` set on the channels no configured provider serves.
SPECS = web.AppKey("specs", Mapping[str, ChannelSpec])
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
NOTIFICATIONS = web.AppKey("notifications", NotificationStore)
TENANTS = web.AppKey("tenants", TenantStore)
PUBLISHER = web.AppKey("publisher", Publisher)
DEAD_LETTERS = web.AppKey("dead_letters", DeadLetters)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
BATCHES = web.AppKey("batches", BatchStore)
ROUTES = web.AppKey("routes", RouteStore)
RECEIPTS = web.AppKey("receipts", ReceiptStore)
QUEUE_STATS = web.AppKey("queue_stats", QueueStats)  # the queue's state, read at most once a second
ACCEPT = web.AppKey("accept", AcceptService)
DUE_INDEX = web.AppKey("due_index", DueIndex)  # scheduled jobs by due time
SCHEDULED = web.AppKey("scheduled", ScheduledStore)
# Provider name -> the channels it delivers; and each channel's route when a tenant has none.
PROVIDERS = web.AppKey("providers", Mapping[str, frozenset[str]])
DEFAULT_ROUTES = web.AppKey("default_routes", Mapping[str, list[str]])

TENANT_ID = web.RequestKey("tenant_id", str)  # set by the auth middleware
KEY_ID = web.RequestKey("key_id", str)  # the API key's id, for the audit
PRINCIPAL = web.RequestKey("principal", Principal)
