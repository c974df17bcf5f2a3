"""Scheduled notifications' rows: due, rescheduled, and read back for the reconciler.

PostgreSQL is the truth of a schedule (status 'scheduled' and ``send_at``); Redis's due-time
index is rebuilt from here. Each transition changes the row and appends its audit row together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from pulse.core.models import Job
from pulse.core.views import NotificationView
from pulse.store.rows import JOB_COLUMNS, VIEW_COLUMNS, job_from_row, view_from_row

# Only rows still 'scheduled' and due move (with the claim's second of grace): recording twice,
# or after a worker claimed it, or after it was rescheduled later, changes nothing.
_DUE = """
WITH q AS (
    UPDATE notifications SET status = 'queued', updated_at = now()
     WHERE id = ANY($1::uuid[])  -- IS TRUE: no partial index on status (see store/ledger.py)
       AND (status = 'scheduled' AND send_at <= now() + interval '1 second') IS TRUE
    RETURNING id
)
INSERT INTO audit (notification_id, status, worker, detail) SELECT id, 'queued', $2, 'due' FROM q
ON CONFLICT (notification_id) WHERE detail = 'due' DO NOTHING
"""

_RESCHEDULE = f"""
WITH r AS (
    UPDATE notifications SET send_at = $3, updated_at = now()
     WHERE id = $1 AND tenant_id = $2 AND status = 'scheduled'
       AND channel NOT LIKE 'task:%'  -- a deferred job is moved on /api/jobs
    RETURNING *
), a AS (
    INSERT INTO audit (notification_id, status, detail)
    SELECT id, 'scheduled', $4 || ', due ' || $3::timestamptz::text FROM r
)
SELECT {VIEW_COLUMNS}, tenant_id::text AS tenant_id FROM r
"""

_OPEN = f"""
SELECT {JOB_COLUMNS}, send_at
  FROM notifications
 WHERE status = 'scheduled'
   AND updated_at < now() - make_interval(secs => $1)
   AND (send_at, id) > ($2, $3::uuid)
 ORDER BY send_at, id
 LIMIT $4
"""


class ScheduledStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_due(self, ids: Sequence[str], worker: str) -> int:
        """Move the streamed ones still 'scheduled' to 'queued', with their audit rows."""
        if not ids:
            return 0
        result: str = await self._pool.execute(_DUE, list(ids), worker)
        return int(result.rsplit(" ", 1)[-1])

    async def reschedule(
        self, tenant_id: str, notification_id: str, send_at: datetime, by: str
    ) -> tuple[Job, NotificationView] | None:
        """Move a still scheduled notification's due time; its job and view, or None when it
        is not (or no longer) scheduled."""
        row = await self._pool.fetchrow(_RESCHEDULE, notification_id, tenant_id, send_at, by)
        if row is None:
            return None
        view = {name: value for name, value in row.items() if name != "tenant_id"}
        return job_from_row(row), view_from_row(view)

    async def open_scheduled(
        self, older_than_s: float, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[Job, datetime]]:
        """Scheduled rows untouched for ``older_than_s``, by due time (keyset paged), as jobs
        with their due time: what the reconciler checks against the due-time index."""
        since, last_id = after or (datetime.min.replace(tzinfo=UTC), str(uuid.UUID(int=0)))
        rows = await self._pool.fetch(_OPEN, older_than_s, since, last_id, limit)
        return [(job_from_row(row), row["send_at"]) for row in rows]
