"""The dead-letter record: list with filters, show with attempts, replay, purge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from pulse.core.models import Job
from pulse.core.views import AttemptView, DeadLetterView
from pulse.store.notifications import NotificationStore
from pulse.store.rows import JOB_COLUMNS, job_from_row


class DeadLetterFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters an operation applies to; every field narrows the set."""

    tenant_id: str | None = None
    channel: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: list[int] | None = None
    up_to_id: int | None = None  # a snapshot bound: replay leaves later deaths alone


@dataclass(frozen=True, slots=True)
class Purged:
    job_ids: list[str]
    entry_ids: list[str]


_WHERE = """
 WHERE d.replayed_at IS NULL
   AND ($1::uuid IS NULL OR d.tenant_id = $1)
   AND ($2::text IS NULL OR d.channel = $2)
   AND ($3::text IS NULL OR d.error_class = $3)
   AND ($4::timestamptz IS NULL OR d.dead_at >= $4)
   AND ($5::timestamptz IS NULL OR d.dead_at < $5)
   AND ($6::bigint[] IS NULL OR d.id = ANY($6))
   AND ($7::bigint IS NULL OR d.id <= $7)
"""
_COLUMNS = """d.id, d.notification_id::text, d.tenant_id::text, d.channel, d.reason, d.error_class,
       d.dead_at, d.stream, d.entry_id"""

_LIST = f"SELECT {_COLUMNS} FROM dead_letters d {_WHERE} AND d.id > $8 ORDER BY d.id LIMIT $9"

_REPLAY = f"""
WITH d AS (
    UPDATE dead_letters d SET replayed_at = now(), replayed_by = $9
    {_WHERE} AND d.notification_id IS NOT NULL
      AND d.id IN (SELECT id FROM dead_letters d {_WHERE} ORDER BY d.id LIMIT $8)
    RETURNING d.notification_id, d.stream, d.entry_id
), n AS (
    UPDATE notifications n
       SET status = 'queued', attempts = 0, last_error = NULL, failed_at = NULL, step = 0,
           updated_at = now()
      FROM d WHERE n.id = d.notification_id AND n.status = 'failed'
    RETURNING n.*
), a AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, 'replayed', NULL, 'replayed by ' || $9 FROM n
), q AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, 'queued', NULL, 'fresh attempts after replay' FROM n
)
SELECT {JOB_COLUMNS}, d.entry_id
  FROM n JOIN d ON d.notification_id = n.id
"""

_PURGE = f"""
DELETE FROM dead_letters d {_WHERE}
RETURNING d.notification_id::text, d.entry_id
"""


def _args(f: DeadLetterFilter) -> list[Any]:
    return [f.tenant_id, f.channel, f.error_class, f.since, f.until, f.ids, f.up_to_id]


class DeadLetterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(
        self, where: DeadLetterFilter, after_id: int = 0, limit: int = 100
    ) -> list[DeadLetterView]:
        rows = await self._pool.fetch(_LIST, *_args(where), after_id, limit)
        return [_view(row) for row in rows]

    async def newest_id(self) -> int:
        newest: int | None = await self._pool.fetchval("SELECT max(id) FROM dead_letters")
        return newest or 0

    async def attempts(self, notification_id: str) -> list[AttemptView]:
        return await NotificationStore(self._pool).attempts(notification_id)

    async def replay(self, where: DeadLetterFilter, limit: int, by: str) -> list[tuple[Job, str]]:
        """Mark up to ``limit`` dead letters replayed and their notifications queued afresh
        (attempts start over; the audit records ``replayed`` and by whom), in one statement.
        Returns the jobs to enqueue with the entry id they had when they died."""
        rows = await self._pool.fetch(_REPLAY, *_args(where), limit, by)
        return [(job_from_row(row), row["entry_id"]) for row in rows]

    async def purge(self, where: DeadLetterFilter) -> Purged:
        rows = await self._pool.fetch(_PURGE, *_args(where))
        return Purged(
            job_ids=[row[0] for row in rows if row[0]], entry_ids=[row[1] for row in rows]
        )


def _view(row: Any) -> DeadLetterView:
    return DeadLetterView(**dict(row))
