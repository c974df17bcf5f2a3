"""Notification rows and their audit trail.

Every transition is one SQL statement that changes the row and appends the audit row together,
and every worker-side transition takes a whole batch: the hot path pays one round trip per batch,
never one per notification.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from pulse.models import AuditEntry, Job, NotificationView, Status
from pulse.store.tenants import Connection

_INSERT = """
WITH n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, metadata)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'queued', $7, $8::jsonb)
    RETURNING id, created_at
), a AS (
    INSERT INTO audit (notification_id, status) SELECT id, 'queued' FROM n
)
SELECT created_at FROM n
"""

_CLAIM = """
WITH c AS (
    UPDATE notifications n
       SET status = 'delivering', attempts = n.attempts + 1, updated_at = now()
     WHERE n.id = ANY($1::uuid[])
       AND (n.status IN ('queued', 'retrying')
            OR (n.status = 'delivering' AND n.updated_at < now() - make_interval(secs => $3)))
    RETURNING n.id, n.attempts
), a AS (
    INSERT INTO audit (notification_id, status, worker) SELECT id, 'delivering', $2 FROM c
)
SELECT id::text AS id, true AS claimed FROM c
UNION ALL
SELECT id::text, false FROM notifications
 WHERE id = ANY($1::uuid[]) AND status IN ('delivered', 'failed', 'cancelled')
"""

_TOUCH = """
UPDATE notifications SET updated_at = now()
 WHERE id = ANY($1::uuid[]) AND status = 'delivering'
"""

_RECORD = """
WITH o AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::float8[],
        $7::text[], $8::text[], $9::text[], $10::bool[], $11::text[], $12::text[]
    ) AS o(id, status, error, number, started_at, duration_ms,
           outcome, error_class, response, dead, stream, entry_id)
), u AS (
    UPDATE notifications n
       SET status = o.status,
           last_error = o.error,
           updated_at = now(),
           delivered_at = CASE WHEN o.status = 'delivered' THEN now() ELSE n.delivered_at END,
           failed_at = CASE WHEN o.status = 'failed' THEN now() ELSE n.failed_at END
      FROM o
     WHERE n.id = o.id AND n.status = 'delivering'
    RETURNING n.id, n.tenant_id, n.channel, o.status, o.error, o.number, o.started_at,
              o.duration_ms, o.outcome, o.error_class, o.response, o.dead, o.stream, o.entry_id
), a AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, status, $13, error FROM u
), t AS (
    INSERT INTO attempts (notification_id, number, started_at, duration_ms, outcome,
                          error_class, error_message, provider_response, worker)
    SELECT id, number, started_at, duration_ms, outcome, error_class, error, response, $13
      FROM u
), d AS (
    INSERT INTO dead_letters (notification_id, tenant_id, channel, reason, error_class,
                              stream, entry_id)
    SELECT id, tenant_id, channel, error, error_class, stream, entry_id FROM u WHERE dead
    ON CONFLICT (stream, entry_id) DO NOTHING
)
SELECT count(*) FROM u
"""

_UNDECODABLE = """
INSERT INTO dead_letters (reason, error_class, stream, entry_id, raw)
SELECT reason, 'UndecodableMessage', stream, entry_id, raw
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(reason, stream, entry_id, raw)
ON CONFLICT (stream, entry_id) DO NOTHING
"""

_OPEN = """
SELECT id::text AS id, tenant_id::text AS tenant_id, channel, recipient,
       payload::text AS payload, priority, max_attempts, updated_at
  FROM notifications
 WHERE status IN ('queued', 'delivering', 'retrying')
   AND updated_at < now() - make_interval(secs => $1)
   AND (updated_at, id) > ($2, $3::uuid)
 ORDER BY updated_at, id
 LIMIT $4
"""

_REQUEUED = """
INSERT INTO audit (notification_id, status, worker, detail)
SELECT id, 'queued', $2, 're-enqueued: missing from Redis' FROM unnest($1::uuid[]) AS id
"""

_SELECT = """
SELECT id::text AS id, status, channel, recipient, payload::text AS payload, priority,
       max_attempts, attempts, last_error, metadata::text AS metadata, created_at, updated_at,
       delivered_at, failed_at
  FROM notifications WHERE id = $1 AND tenant_id = $2
"""

_AUDIT = """
SELECT a.status, a.at, a.worker, a.detail
  FROM audit a JOIN notifications n ON n.id = a.notification_id
 WHERE a.notification_id = $1 AND n.tenant_id = $2
 ORDER BY a.id
"""


@dataclass(frozen=True, slots=True)
class NewNotification:
    id: str
    tenant_id: str
    channel: str
    recipient: str
    payload_json: bytes
    priority: int
    max_attempts: int
    metadata_json: bytes = b"{}"


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One finished attempt to persist: the new status, the attempt row, maybe a dead letter."""

    notification_id: str
    status: Status
    error: str | None
    number: int
    started_at: datetime
    duration_ms: float
    outcome: str  # delivered | retry | failed
    error_class: str | None
    response: str | None
    dead: bool
    stream: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: set[str]
    finished: set[str]


@dataclass(frozen=True, slots=True)
class UndecodableRow:
    stream: str
    entry_id: str
    raw: bytes
    reason: str


class AttemptView(msgspec.Struct, kw_only=True):
    number: int
    started_at: datetime
    duration_ms: float
    outcome: str
    error_class: str | None
    error_message: str | None
    provider_response: str | None
    worker: str


class NotificationFilter(msgspec.Struct, kw_only=True):
    """What ``GET /api/notifications/`` can narrow a tenant's list by."""

    status: Status | None = None
    channel: str | None = None
    recipient: str | None = None
    priority: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] | None = None


_SEARCH = """
SELECT id::text AS id, status, channel, recipient, payload::text AS payload, priority,
       max_attempts, attempts, last_error, metadata::text AS metadata, created_at, updated_at,
       delivered_at, failed_at
  FROM notifications
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR channel = $3)
   AND ($4::text IS NULL OR recipient = $4)
   AND ($5::smallint IS NULL OR priority = $5)
   AND ($6::timestamptz IS NULL OR created_at >= $6)
   AND ($7::timestamptz IS NULL OR created_at < $7)
   AND ($8::jsonb IS NULL OR metadata @> $8)
   AND ($9::uuid IS NULL OR id < $9)
 ORDER BY id DESC
 LIMIT $10
"""

_CANCEL = """
WITH c AS (
    UPDATE notifications SET status = 'cancelled', updated_at = now()
     WHERE id = $1 AND tenant_id = $2 AND status IN ('queued', 'scheduled', 'retrying')
    RETURNING id
), a AS (
    INSERT INTO audit (notification_id, status, detail) SELECT id, 'cancelled', $3 FROM c
)
SELECT (SELECT status FROM notifications WHERE id = $1 AND tenant_id = $2) AS before,
       EXISTS (SELECT 1 FROM c) AS cancelled
"""


class NotificationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(
        self,
        new: NewNotification,
        remember: Callable[[Connection, datetime], Awaitable[None]] | None = None,
    ) -> datetime:
        """Commit the notification and its ``queued`` audit row; return its creation time.

        ``remember`` runs in the same transaction (the Idempotency-Key's stored answer)."""
        async with self._pool.acquire() as conn, conn.transaction():
            created_at: datetime = await conn.fetchval(
                _INSERT,
                new.id,
                new.tenant_id,
                new.channel,
                new.recipient,
                new.payload_json.decode(),
                new.priority,
                new.max_attempts,
                new.metadata_json.decode(),
            )
            if remember is not None:
                await remember(conn, created_at)
        return created_at

    async def claim(self, ids: Sequence[str], worker: str, lease_s: float) -> Claim:
        """Move the given notifications to ``delivering`` (the delivery ledger).

        Ones already delivered, failed or cancelled come back as ``finished``: their stream
        entries are acknowledged without sending. Ones a live worker holds (claimed or touched
        less than ``lease_s`` ago) are neither: after Redis lost its data, the reconciler's
        copy must not overtake a delivery still in that worker's hands.
        """
        if not ids:
            return Claim(set(), set())
        rows = await self._pool.fetch(_CLAIM, list(ids), worker, lease_s)
        return Claim(
            claimed={row["id"] for row in rows if row["claimed"]},
            finished={row["id"] for row in rows if not row["claimed"]},
        )

    async def touch(self, ids: Sequence[str]) -> None:
        """Heartbeat held notifications, so their claim stays fresh while they are in hand."""
        if ids:
            await self._pool.execute(_TOUCH, list(ids))

    async def record(self, outcomes: Sequence[OutcomeRow], worker: str) -> int:
        """Persist a batch of attempts: statuses, audit, attempt and dead-letter rows, in one
        statement. Only ``delivering`` rows move, so recording a batch twice changes nothing."""
        if not outcomes:
            return 0
        columns = [
            [getattr(o, name) for o in outcomes]
            for name in (
                "notification_id", "status", "error", "number", "started_at", "duration_ms",
                "outcome", "error_class", "response", "dead", "stream", "entry_id",
            )
        ]  # fmt: skip
        moved: int = await self._pool.fetchval(_RECORD, *columns, worker)
        return moved

    async def record_undecodable(self, rows: Sequence[UndecodableRow]) -> None:
        """Keep stream entries that could not be decoded, raw bytes and all."""
        if rows:
            await self._pool.execute(
                _UNDECODABLE,
                [r.reason for r in rows],
                [r.stream for r in rows],
                [r.entry_id for r in rows],
                [r.raw for r in rows],
            )

    async def open_jobs(
        self, older_than_s: float, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[Job, datetime]]:
        """Unfinished notifications untouched for ``older_than_s``, oldest first (keyset paged),
        as jobs with their update time: what the reconciler checks against Redis."""
        since, last_id = after or (datetime.min.replace(tzinfo=UTC), str(uuid.UUID(int=0)))
        rows = await self._pool.fetch(_OPEN, older_than_s, since, last_id, limit)
        return [(job_from_row(row), row["updated_at"]) for row in rows]

    async def withdraw(self, notification_id: str) -> None:
        """Remove a notification the API could not stream (its client got a 503)."""
        await self._pool.execute(
            "DELETE FROM notifications WHERE id = $1 AND status = 'queued'", notification_id
        )

    async def note_requeued(self, ids: Sequence[str], worker: str) -> None:
        if ids:
            await self._pool.execute(_REQUEUED, list(ids), worker)

    async def get(self, tenant_id: str, notification_id: str) -> NotificationView | None:
        row = await self._pool.fetchrow(_SELECT, notification_id, tenant_id)
        if row is None:
            return None
        return view_from_row(row)

    async def history(self, tenant_id: str, notification_id: str) -> list[AuditEntry]:
        rows = await self._pool.fetch(_AUDIT, notification_id, tenant_id)
        return [AuditEntry(**dict(row)) for row in rows]

    async def attempts(self, notification_id: str) -> list[AttemptView]:
        rows = await self._pool.fetch(
            "SELECT number, started_at, duration_ms, outcome, error_class, error_message,"
            " provider_response, worker FROM attempts WHERE notification_id = $1 ORDER BY id",
            notification_id,
        )
        return [AttemptView(**dict(row)) for row in rows]

    async def search(
        self, tenant_id: str, where: NotificationFilter, before_id: str | None, limit: int
    ) -> list[NotificationView]:
        """Newest first; ``before_id`` is the cursor (ids are time-ordered UUIDv7)."""
        metadata = None if not where.metadata else msgspec.json.encode(where.metadata).decode()
        rows = await self._pool.fetch(
            _SEARCH,
            tenant_id,
            where.status,
            where.channel,
            where.recipient,
            where.priority,
            where.created_after,
            where.created_before,
            metadata,
            before_id,
            limit,
        )
        return [view_from_row(row) for row in rows]

    async def cancel(
        self, tenant_id: str, notification_id: str, by: str
    ) -> tuple[str | None, bool]:
        """Cancel if queued, scheduled or retrying; return (status before, cancelled now)."""
        row = await self._pool.fetchrow(_CANCEL, notification_id, tenant_id, by)
        assert row is not None
        return row["before"], row["cancelled"]

    async def provider_event(self, notification_id: str, status: str, detail: str) -> bool:
        """Record a provider's report (delivered to the handset, undelivered...) in the audit;
        False when there is no such notification."""
        result: str = await self._pool.execute(
            "INSERT INTO audit (notification_id, status, detail)"
            " SELECT id, $2, $3 FROM notifications WHERE id = $1",
            notification_id,
            status,
            detail,
        )
        return result.endswith(" 1")

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")


def job_from_row(row: Any) -> Job:
    """A job from a row with the notification's columns (payload as JSON text)."""
    return Job(
        id=row["id"],
        tenant_id=row["tenant_id"],
        kind="notification",
        handler=row["channel"],
        recipient=row["recipient"],
        payload=msgspec.json.decode(row["payload"]),
        priority=row["priority"],
        max_attempts=row["max_attempts"],
    )


def view_from_row(row: Any) -> NotificationView:
    fields = dict(row)
    fields["payload"] = msgspec.json.decode(fields["payload"])
    fields["metadata"] = msgspec.json.decode(fields["metadata"])
    return NotificationView(**fields)
