"""Receipt endpoints, and the receipts themselves: notifications on the internal ``receipt``
channel, created in the same transaction as the final status they report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from pulse.ids import uuid7
from pulse.models import Job, Status
from pulse.store.ledger import Moved
from pulse.store.rows import JOB_COLUMNS, job_from_row
from pulse.store.tenants import Connection

RECEIPT_CHANNEL = "receipt"
REPORTED = (Status.DELIVERED, Status.FAILED)

# The event a tenant receives (Standard Webhooks body: type, timestamp, data). The channel and
# recipient are those of the step that ended the notification's life.
_CREATE = f"""
WITH m AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS m(id, receipt_id)
), s AS (
    SELECT m.receipt_id, n.*, e.url,
           CASE WHEN n.step = 0 THEN n.channel
                ELSE n.fallback -> (n.step - 1) ->> 'channel' END AS used_channel,
           CASE WHEN n.step = 0 THEN n.recipient
                ELSE n.fallback -> (n.step - 1) ->> 'recipient' END AS used_recipient
      FROM m
      JOIN notifications n ON n.id = m.id
      JOIN receipt_endpoints e ON e.tenant_id = n.tenant_id AND n.status = ANY(e.events)
     WHERE n.receipt_for IS NULL AND n.status IN ('delivered', 'failed')
), r AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts,
         receipt_for)
    SELECT receipt_id, tenant_id, '{RECEIPT_CHANNEL}', url,
           jsonb_build_object(
               'type', 'notification.' || status,
               'data', jsonb_build_object(
                   'id', id, 'status', status, 'channel', used_channel,
                   'recipient', used_recipient, 'provider', provider, 'step', step,
                   'attempts', attempts, 'error', last_error, 'metadata', metadata,
                   'created_at', created_at,
                   'finished_at', coalesce(delivered_at, failed_at))),
           priority, 'queued', $3, id
      FROM s
    RETURNING *
), a AS (
    INSERT INTO audit (notification_id, status, detail)
    SELECT id, 'queued', 'receipt of ' || receipt_for FROM r
)
SELECT {JOB_COLUMNS} FROM r
"""


class ReceiptEndpoint(msgspec.Struct, kw_only=True):
    url: str
    events: list[str]
    generation: int
    rotated_at: datetime | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = "url, events, generation, rotated_at, created_at, updated_at"


class ReceiptStore:
    def __init__(self, pool: asyncpg.Pool, max_attempts: int = 10) -> None:
        self._pool = pool
        self._max_attempts = max_attempts

    async def get(self, tenant_id: str) -> ReceiptEndpoint | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM receipt_endpoints WHERE tenant_id = $1", tenant_id
        )
        return None if row is None else ReceiptEndpoint(**dict(row))

    async def put(self, tenant_id: str, url: str, events: Sequence[str]) -> ReceiptEndpoint:
        """Set the endpoint; its signing secret (generation) stays as it was."""
        row = await self._pool.fetchrow(
            "INSERT INTO receipt_endpoints (tenant_id, url, events) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id) DO UPDATE"
            " SET url = excluded.url, events = excluded.events, updated_at = now()"
            f" RETURNING {_COLUMNS}",
            tenant_id,
            url,
            list(events),
        )
        assert row is not None  # an upsert always returns its row
        return ReceiptEndpoint(**dict(row))

    async def delete(self, tenant_id: str) -> bool:
        result: str = await self._pool.execute(
            "DELETE FROM receipt_endpoints WHERE tenant_id = $1", tenant_id
        )
        return result.endswith(" 1")

    async def rotate(self, tenant_id: str) -> ReceiptEndpoint | None:
        """Move to the next signing secret; the previous one keeps signing for a grace period."""
        row = await self._pool.fetchrow(
            "UPDATE receipt_endpoints SET generation = generation + 1, rotated_at = now(),"
            f" updated_at = now() WHERE tenant_id = $1 RETURNING {_COLUMNS}",
            tenant_id,
        )
        return None if row is None else ReceiptEndpoint(**dict(row))

    async def generations(self) -> dict[str, tuple[int, datetime | None]]:
        """Every tenant's signing generation and when it last rotated: what workers load."""
        rows = await self._pool.fetch(
            "SELECT tenant_id::text, generation, rotated_at FROM receipt_endpoints"
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    async def create_for(self, conn: Connection, moved: Sequence[Moved]) -> list[Job]:
        """Queue a receipt for each finished notification whose tenant wants one (run inside
        the transaction that finished them); return the receipts' jobs, to be streamed."""
        final = [m.notification_id for m in moved if m.status in REPORTED]
        if not final:
            return []
        ids = [str(uuid7()) for _ in final]
        rows = await conn.fetch(_CREATE, final, ids, self._max_attempts)
        return [job_from_row(row) for row in rows]
