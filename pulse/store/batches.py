"""Batches: committed whole by the API, expanded into notifications by a worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from pulse.core.models import Job, JobKind
from pulse.store.idempotency import Remembered, remember_cte
from pulse.store.rows import JOB_COLUMNS, job_from_row
from pulse.store.tenants import Connection

_INSERT = "INSERT INTO batches (id, tenant_id, items, priority) VALUES ($1, $2, $3::jsonb, $4)"

# With the Idempotency-Key's answer: the batch is written only if the key was free.
_INSERT_KEYED = f"""
WITH {remember_cte("$2::uuid", 5)}
INSERT INTO batches (id, tenant_id, items, priority)
SELECT $1::uuid, $2::uuid, $3::jsonb, $4::smallint FROM k
RETURNING true
"""

_EXPAND = f"""
WITH b AS (
    UPDATE batches SET expanded_at = coalesce(expanded_at, now())
     WHERE id = $1 RETURNING tenant_id, items
), i AS (
    SELECT b.tenant_id, x.* FROM b,
           jsonb_to_recordset(b.items) AS x(id uuid, channel text, recipient text, payload jsonb,
                                           priority smallint, max_attempts smallint,
                                           metadata jsonb, fallback jsonb, send_at timestamptz)
), n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, metadata,
         fallback, send_at)
    SELECT id, tenant_id, channel, recipient, payload, priority,
           CASE WHEN send_at > now() THEN 'scheduled' ELSE 'queued' END, max_attempts,
           coalesce(metadata, '{{}}'::jsonb), coalesce(fallback, '[]'::jsonb), send_at
      FROM i
    ON CONFLICT (id) DO NOTHING
    RETURNING *
), a AS (
    INSERT INTO audit (notification_id, status, detail)
    SELECT id, status, 'fanned out from batch ' || $1::text
                       || CASE WHEN status = 'scheduled' THEN ', due ' || send_at::text ELSE '' END
      FROM n
)
SELECT {JOB_COLUMNS}, status, send_at FROM n
"""


class BatchItem(msgspec.Struct, kw_only=True):
    id: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    metadata: dict[str, str] | None = None
    fallback: list[dict[str, Any]] | None = None
    send_at: datetime | None = None  # due later (UTC); None: at once


@dataclass(frozen=True, slots=True)
class Expanded:
    """A batch's new notifications: to stream now, and to index by due time."""

    queued: list[Job]
    scheduled: list[tuple[Job, datetime]]


@dataclass(frozen=True, slots=True)
class NewBatch:
    id: str
    tenant_id: str
    items: Sequence[BatchItem]
    priority: int  # the most urgent of its items': the fan-out job's

    def args(self) -> tuple[object, ...]:
        items = msgspec.json.encode(list(self.items)).decode()
        return (self.id, self.tenant_id, items, self.priority)


class BatchStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, batch: NewBatch) -> None:
        await self._pool.execute(_INSERT, *batch.args())

    @staticmethod
    async def insert_keyed(conn: Connection, batch: NewBatch, answer: Remembered) -> bool:
        """In the key's claim transaction: the batch and the answer to replay, in one
        statement. False (nothing written): the key was answered meanwhile."""
        written: bool | None = await conn.fetchval(_INSERT_KEYED, *batch.args(), *answer.args())
        return bool(written)

    async def withdraw(self, batch_id: str) -> None:
        await self._pool.execute(
            "DELETE FROM batches WHERE id = $1 AND expanded_at IS NULL", batch_id
        )

    async def expand(self, batch_id: str) -> Expanded:
        """Create the batch's notifications (once: a second call creates nothing) with their
        audit rows, ``queued``, or ``scheduled`` when due later (by PostgreSQL's clock: a batch
        expanded late sends its overdue items at once); return the jobs this call created."""
        rows = await self._pool.fetch(_EXPAND, batch_id)
        queued = [job_from_row(row) for row in rows if row["status"] == "queued"]
        scheduled = [(job_from_row(r), r["send_at"]) for r in rows if r["status"] == "scheduled"]
        return Expanded(queued, scheduled)

    async def unexpanded(self, older_than_s: float, limit: int) -> list[Job]:
        """Fan-out jobs of batches never expanded: what the reconciler checks against Redis."""
        rows = await self._pool.fetch(
            "SELECT id::text, tenant_id::text, priority FROM batches"
            " WHERE expanded_at IS NULL AND created_at < now() - make_interval(secs => $1)"
            " ORDER BY created_at LIMIT $2",
            older_than_s,
            limit,
        )
        return [fanout_job(row[0], row[1], row[2]) for row in rows]


def fanout_job(batch_id: str, tenant_id: str, priority: int) -> Job:
    return Job(
        id=batch_id,
        tenant_id=tenant_id,
        kind=JobKind.FANOUT,
        channel="batch",
        recipient="",
        payload={},
        priority=priority,
        max_attempts=1,
    )
