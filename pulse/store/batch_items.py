"""Reading an item of a batch a worker has not fanned out yet.

An accepted batch is one row until a worker expands it into notifications, yet each item's id
was answered at once: GET of that id must not be a 404 meanwhile. Until then the item is what
its request asked, ``queued`` (or ``scheduled`` when due later), with no attempts. Only
unexpanded batches are searched (the partial index ``batches_unexpanded``), of the caller's
tenant; once expanded, the notification's own row answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from pulse.core.models import Status
from pulse.core.views import AuditEntry, NotificationView

_ITEM = """
SELECT b.id::text AS batch_id, b.created_at, x.channel, x.recipient, x.payload::text AS payload,
       x.priority, x.max_attempts, x.metadata::text AS metadata, x.fallback::text AS fallback,
       x.send_at, x.send_at > now() AS later
  FROM batches b,
       jsonb_to_recordset(b.items) AS x(id uuid, channel text, recipient text, payload jsonb,
                                       priority smallint, max_attempts smallint, metadata jsonb,
                                       fallback jsonb, send_at timestamptz)
 WHERE b.expanded_at IS NULL AND b.tenant_id = $2
   AND b.items @> jsonb_build_array(jsonb_build_object('id', $1::text))
   AND x.id = $1::uuid
 LIMIT 1
"""


class BatchItemView(msgspec.Struct, kw_only=True):
    view: NotificationView
    history: list[AuditEntry]


async def unexpanded_item(
    pool: asyncpg.Pool, tenant_id: str, notification_id: str
) -> BatchItemView | None:
    """The item ``notification_id`` of one of the tenant's batches not yet fanned out."""
    row = await pool.fetchrow(_ITEM, notification_id, tenant_id)
    if row is None:
        return None
    status = Status.SCHEDULED if row["later"] else Status.QUEUED
    created: datetime = row["created_at"]
    view = NotificationView(
        id=notification_id,
        status=status,
        channel=row["channel"],
        recipient=row["recipient"],
        payload=_json(row["payload"], {}),
        priority=row["priority"],
        max_attempts=row["max_attempts"],
        attempts=0,
        last_error=None,
        metadata=_json(row["metadata"], {}),
        fallback=_json(row["fallback"], []),
        step=0,
        provider=None,
        receipt_for=None,
        created_at=created,
        updated_at=created,
        delivered_at=None,
        failed_at=None,
        send_at=row["send_at"],
    )
    detail = f"in batch {row['batch_id']}, not yet fanned out"
    return BatchItemView(view=view, history=[AuditEntry(status=status, at=created, detail=detail)])


def _json(raw: str | None, empty: Any) -> Any:
    return empty if raw is None else msgspec.json.decode(raw)
