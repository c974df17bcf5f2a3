"""A tenant's recent activity, for the dashboard: counts by status, throughput and end-to-end
latency per channel, recent failures, provider calls and what is being delivered right now.

Every query is bounded by a window of recent notifications, found through the tenant's
``(tenant_id, id)`` index: ids are UUIDv7, so "accepted in the last N minutes" is an id range
and no query scans a tenant's whole history.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

_IN_WINDOW = "tenant_id = $1 AND id >= $2"

_STATUSES = f"SELECT status, count(*)::int AS n FROM notifications WHERE {_IN_WINDOW} GROUP BY 1"

_THROUGHPUT = f"""
WITH n AS (SELECT channel, created_at, delivered_at, failed_at FROM notifications
            WHERE {_IN_WINDOW})
SELECT channel, 'accepted' AS kind, floor(extract(epoch FROM created_at) / $3)::bigint AS b,
       count(*)::int AS n FROM n GROUP BY 1, 2, 3
UNION ALL
SELECT channel, 'delivered', floor(extract(epoch FROM delivered_at) / $3)::bigint, count(*)::int
  FROM n WHERE delivered_at IS NOT NULL GROUP BY 1, 2, 3
UNION ALL
SELECT channel, 'failed', floor(extract(epoch FROM failed_at) / $3)::bigint, count(*)::int
  FROM n WHERE failed_at IS NOT NULL GROUP BY 1, 2, 3
"""

_LATENCY = f"""
SELECT channel, count(*)::int AS n,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM delivered_at - created_at) * 1000) AS p
  FROM notifications WHERE {_IN_WINDOW} AND delivered_at IS NOT NULL GROUP BY 1 ORDER BY 1
"""

_FAILURES = f"""
SELECT id::text AS id, channel, recipient, status, attempts, last_error AS error,
       updated_at AS at
  FROM notifications WHERE {_IN_WINDOW} AND status IN ('retrying', 'failed')
 ORDER BY updated_at DESC LIMIT $3
"""

# Newest first, so the first rows of a provider are its current streak.
_CALLS = """
SELECT a.provider, a.outcome, a.error_class, a.error_message AS error, a.started_at AS at
  FROM attempts a JOIN notifications n ON n.id = a.notification_id
 WHERE n.tenant_id = $1 AND n.id >= $2 AND a.provider IS NOT NULL
 ORDER BY a.id DESC LIMIT $3
"""

_DEAD_LETTERS = """
SELECT count(*)::int FROM dead_letters WHERE tenant_id = $1 AND replayed_at IS NULL
"""

# What each worker has in hand: the worker of a delivering notification is its last audit row's.
_DELIVERING = """
SELECT a.worker, n.channel, count(*)::int AS n
  FROM notifications n
  CROSS JOIN LATERAL (SELECT worker FROM audit WHERE notification_id = n.id
                       ORDER BY id DESC LIMIT 1) a
 WHERE n.status = 'delivering' AND ($1::uuid IS NULL OR n.tenant_id = $1)
 GROUP BY 1, 2
"""


class ThroughputPoint(msgspec.Struct, kw_only=True):
    channel: str
    kind: str  # accepted, delivered or failed
    at: int  # start of the bucket, Unix seconds
    count: int


class Latency(msgspec.Struct, kw_only=True):
    channel: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


class Failure(msgspec.Struct, kw_only=True):
    id: str
    channel: str
    recipient: str
    status: str
    attempts: int
    error: str | None
    at: datetime


class ProviderCall(msgspec.Struct, kw_only=True):
    provider: str
    outcome: str
    error_class: str | None
    error: str | None
    at: datetime


class Delivering(msgspec.Struct, kw_only=True):
    worker: str | None
    channel: str
    count: int


class Activity(msgspec.Struct, kw_only=True):
    statuses: dict[str, int]
    throughput: list[ThroughputPoint]
    latency: list[Latency]
    failures: list[Failure]
    calls: list[ProviderCall]
    dead_letters: int


def window_start(since_ms: int) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond: ids at or above it were made since."""
    return uuid.UUID(int=since_ms << 80)


class ActivityStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def activity(
        self, tenant_id: str, since_ms: int, bucket_s: int, limit: int = 20
    ) -> Activity:
        """The tenant's notifications accepted since ``since_ms``, summed up."""
        start = window_start(since_ms)
        async with self._pool.acquire() as conn:
            statuses = await conn.fetch(_STATUSES, tenant_id, start)
            throughput = await conn.fetch(_THROUGHPUT, tenant_id, start, bucket_s)
            latency = await conn.fetch(_LATENCY, tenant_id, start)
            failures = await conn.fetch(_FAILURES, tenant_id, start, limit)
            calls = await conn.fetch(_CALLS, tenant_id, start, 25 * limit)
            dead = await conn.fetchval(_DEAD_LETTERS, tenant_id)
        return Activity(
            statuses={row["status"]: row["n"] for row in statuses},
            throughput=[_point(row, bucket_s) for row in throughput],
            latency=[_latency(row) for row in latency],
            failures=[Failure(**dict(row)) for row in failures],
            calls=[ProviderCall(**dict(row)) for row in calls],
            dead_letters=int(dead or 0),
        )

    async def delivering(self, tenant_id: str | None) -> list[Delivering]:
        """Notifications in a worker's hand now, by worker and channel (``None``: all tenants)."""
        rows = await self._pool.fetch(_DELIVERING, tenant_id)
        return [Delivering(worker=r["worker"], channel=r["channel"], count=r["n"]) for r in rows]


def _point(row: asyncpg.Record, bucket_s: int) -> ThroughputPoint:
    return ThroughputPoint(
        channel=row["channel"], kind=row["kind"], at=row["b"] * bucket_s, count=row["n"]
    )


def _latency(row: asyncpg.Record) -> Latency:
    p50, p90, p99 = row["p"]
    return Latency(channel=row["channel"], count=row["n"], p50_ms=p50, p90_ms=p90, p99_ms=p99)
