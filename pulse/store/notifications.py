"""Notification rows and their audit trail, as the API writes and reads them.

Every transition is one SQL statement that changes the row and appends the audit row together.
The worker's side (claim, record) is the delivery ledger, ``pulse/store/ledger.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from pulse.core.models import Status
from pulse.core.views import AttemptView, AuditEntry, NotificationView
from pulse.store.idempotency import (
    REMEMBER_COLUMNS,
    REMEMBER_ON_CONFLICT,
    Remembered,
    remember_cte,
)
from pulse.store.rows import VIEW_COLUMNS, view_from_row
from pulse.store.tenants import Connection

# A scheduled one's first audit row says when it is due.
_DUE = "CASE WHEN $11::text = 'scheduled' THEN 'due ' || $10::timestamptz::text END"

_INSERT = f"""
WITH n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, metadata,
         fallback, send_at)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, $11::text, $7, $8::jsonb, $9::jsonb, $10::timestamptz)
    RETURNING id, created_at
), a AS (
    INSERT INTO audit (notification_id, status, detail) SELECT id, $11::text, {_DUE} FROM n
)
SELECT created_at FROM n
"""

# The same with the Idempotency-Key's answer: the notification is written only if the key was
# free (``FROM k``), so a twin that answered first is never doubled.
_INSERT_KEYED = f"""
WITH {remember_cte("$2::uuid", 12)}, n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, metadata,
         fallback, send_at)
    SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::jsonb, $6::smallint, $11::text,
           $7::smallint, $8::jsonb, $9::jsonb, $10::timestamptz
      FROM k
    RETURNING id, created_at
), a AS (
    INSERT INTO audit (notification_id, status, detail) SELECT id, $11::text, {_DUE} FROM n
)
SELECT created_at FROM n
"""

# Many notifications at once (the API's group commit): one row of arrays per column. A keyed
# row is written only if its key was free (its ``k`` row exists), as in ``_INSERT_KEYED``.
_INSERT_MANY = f"""
WITH i AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::smallint[], $7::smallint[], $8::text[], $9::text[], $10::text[],
                         $11::bytea[], $12::smallint[], $13::bytea[], $14::text[])
        AS t(id, tenant_id, channel, recipient, payload, priority, max_attempts, metadata,
             fallback, key, fingerprint, status, body, location)
), k AS (
    {REMEMBER_COLUMNS}
    SELECT tenant_id, key, fingerprint, 'done', status, body, location,
           now() + make_interval(secs => $15::float8)
      FROM i WHERE key IS NOT NULL
    {REMEMBER_ON_CONFLICT}
    RETURNING tenant_id, key
), n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, metadata,
         fallback)
    SELECT i.id, i.tenant_id, i.channel, i.recipient, i.payload::jsonb, i.priority, 'queued',
           i.max_attempts, i.metadata::jsonb, i.fallback::jsonb
      FROM i
     WHERE i.key IS NULL
        OR EXISTS (SELECT 1 FROM k WHERE k.tenant_id = i.tenant_id AND k.key = i.key)
    RETURNING id, created_at
), a AS (
    INSERT INTO audit (notification_id, status) SELECT id, 'queued' FROM n
)
SELECT id, created_at FROM n
"""

_SELECT = f"SELECT {VIEW_COLUMNS} FROM notifications WHERE id = $1 AND tenant_id = $2"

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
    fallback_json: bytes = b"[]"
    send_at: datetime | None = None  # when it is due (None: at once)
    scheduled: bool = False  # due later: committed 'scheduled', not 'queued'


class NotificationFilter(msgspec.Struct, kw_only=True):
    """What ``GET /api/notifications/`` can narrow a tenant's list by."""

    status: Status | None = None
    channel: str | None = None
    recipient: str | None = None
    priority: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] | None = None
    due_after: datetime | None = None
    due_before: datetime | None = None


# Receipts are listed only when asked for (channel=receipt): they would drown the rest; task
# jobs likewise (channel=task:<name>), they have /api/jobs.
_SEARCH = f"""
SELECT {VIEW_COLUMNS}
  FROM notifications
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR status = $2)
   AND (($3::text IS NULL AND receipt_for IS NULL) OR channel = $3)
   AND channel NOT LIKE 'task:%'
   AND ($4::text IS NULL OR recipient = $4)
   AND ($5::smallint IS NULL OR priority = $5)
   AND ($6::timestamptz IS NULL OR created_at >= $6)
   AND ($7::timestamptz IS NULL OR created_at < $7)
   AND ($8::jsonb IS NULL OR metadata @> $8)
   AND ($9::uuid IS NULL OR id < $9)
   AND ($11::timestamptz IS NULL OR send_at >= $11)
   AND ($12::timestamptz IS NULL OR send_at < $12)
 ORDER BY id DESC
 LIMIT $10
"""

_CANCEL = """
WITH c AS (
    UPDATE notifications SET status = 'cancelled', updated_at = now()
     WHERE id = $1 AND tenant_id = $2 AND status IN ('queued', 'scheduled', 'retrying')
       AND channel NOT LIKE 'task:%'  -- a task is cancelled on /api/jobs (its reason, its run)
    RETURNING id
), a AS (
    INSERT INTO audit (notification_id, status, detail) SELECT id, 'cancelled', $3 FROM c
)
SELECT (SELECT status FROM notifications
         WHERE id = $1 AND tenant_id = $2 AND channel NOT LIKE 'task:%') AS before,
       EXISTS (SELECT 1 FROM c) AS cancelled
"""


class NotificationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, new: NewNotification) -> datetime:
        """Commit the notification and its ``queued`` audit row; return its creation time."""
        created_at: datetime = await self._pool.fetchval(_INSERT, *_args(new))
        return created_at

    @staticmethod
    async def insert_keyed(conn: Connection, new: NewNotification, answer: Remembered) -> bool:
        """In the key's claim transaction: the notification, its audit row and the answer to
        replay, in one statement. False (nothing written): the key was answered meanwhile."""
        created_at: datetime | None = await conn.fetchval(
            _INSERT_KEYED, *_args(new), *answer.args()
        )
        return created_at is not None

    async def insert_many(
        self,
        conn: Connection | None,
        rows: Sequence[NewNotification],
        answers: Sequence[Remembered | None],
        retention_s: float,
    ) -> dict[str, datetime]:
        """Commit many notifications (each with its ``queued`` audit row, and its key's answer
        where it has one) in one statement, on ``conn`` (in its transaction) or on the pool.
        Return the creation time of each written; a keyed row answered meanwhile is not."""
        # Rows due at once only (status 'queued', no send_at): a scheduled one commits alone.
        assert not any(new.scheduled or new.send_at for new in rows), "scheduled rows go alone"
        table = [
            (*_args(new)[:QUEUED_COLUMNS], *_answer_args(a))
            for new, a in zip(rows, answers, strict=True)
        ]
        columns = [list(column) for column in zip(*table, strict=True)]
        fetch = self._pool.fetch if conn is None else conn.fetch
        written = await fetch(_INSERT_MANY, *columns, retention_s)
        return {str(row["id"]): row["created_at"] for row in written}

    async def withdraw(self, notification_id: str) -> None:
        """Remove a notification the API could not stream (its client got a 503)."""
        await self._pool.execute(
            "DELETE FROM notifications WHERE id = $1 AND status IN ('queued', 'scheduled')",
            notification_id,
        )

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
            "SELECT number, channel, provider, started_at, duration_ms, outcome, error_class,"
            " error_message, provider_response, worker, provider_message_id"
            " FROM attempts WHERE notification_id = $1"
            " ORDER BY id",
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
            where.due_after,
            where.due_before,
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
        False when there is no such notification. The row is locked as a foreign key's check
        would: a concurrent DELETE waits, then takes this audit row along (sql/023)."""
        result: str = await self._pool.execute(
            PROVIDER_EVENT,
            notification_id,
            status,
            detail,
        )
        return result.endswith(" 1")

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")


PROVIDER_EVENT = (
    "INSERT INTO audit (notification_id, status, detail)"
    " SELECT id, $2, $3 FROM notifications WHERE id = $1 FOR KEY SHARE"
)

QUEUED_COLUMNS = 9  # _args up to the fallback: what a row due at once needs


def _args(new: NewNotification) -> tuple[object, ...]:
    return (
        new.id,
        new.tenant_id,
        new.channel,
        new.recipient,
        new.payload_json.decode(),
        new.priority,
        new.max_attempts,
        new.metadata_json.decode(),
        new.fallback_json.decode(),
        new.send_at,
        Status.SCHEDULED if new.scheduled else Status.QUEUED,
    )


def _answer_args(answer: Remembered | None) -> tuple[object, ...]:
    """The five per-row columns of a key's answer (all NULL for a row without a key)."""
    if answer is None:
        return (None, None, None, None, None)
    return answer.args()[:5]
