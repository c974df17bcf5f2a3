"""Task jobs as the API reads, lists and cancels them, and the registry workers publish.

A task's row is a notification row (``channel = 'task:<name>'``) joined with its
``job_results`` row (sql/013_tasks.sql).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from pulse.core.jobs import JOB_STATUS, JobDocument, JobError
from pulse.core.models import TASK_PREFIX, Status

_COLUMNS = """
n.id::text AS id, n.channel, n.status, n.priority, n.attempts, n.max_attempts,
n.payload::text AS payload, n.last_error, n.created_at, n.updated_at,
r.progress, r.note, r.result::text AS result, r.error_type, r.error_message, r.traceback,
coalesce(r.started_at, CASE WHEN n.status = 'delivering' THEN (
    SELECT max(a.at) FROM audit a WHERE a.notification_id = n.id AND a.status = 'delivering'
) END) AS started_at, r.finished_at
"""
# A running job's start is its claim's audit row until the run writes its own (with its first
# progress report or its end): the run writes nothing when it starts (store/task_results.py).

_GET = f"""
SELECT {_COLUMNS}
  FROM notifications n LEFT JOIN job_results r ON r.job_id = n.id
 WHERE n.id = $1 AND n.tenant_id = $2 AND n.channel LIKE 'task:%'
"""

# A list omits results (GET one job shows it): ten big results must not make one big answer.
_LIST = f"""
SELECT {_COLUMNS.replace("r.result::text AS result", "NULL::text AS result")}
  FROM notifications n LEFT JOIN job_results r ON r.job_id = n.id
 WHERE n.tenant_id = $1 AND n.channel LIKE 'task:%'
   AND ($2::text IS NULL OR n.status = $2)
   AND ($3::text IS NULL OR n.channel = $3)
   AND ($4::uuid IS NULL OR n.id < $4)
 ORDER BY n.id DESC
 LIMIT $5
"""

# Any unfinished task may be cancelled: a queued one is then acknowledged unrun when a worker
# reads it (the claim finds it cancelled); a running one is told over Redis to stop. A run's end
# is recorded with its status in one statement, only on a row still 'delivering'
# (``DeliveryLedger.record``): a cancel committed first keeps the end from being written, and
# one after it finds the job ended. Workers of earlier versions wrote the final result before
# the status: for them the result row is locked first, and a running one whose final result is
# written is not cancelled; a result written after the cancel is hidden on read (``document``).
_CANCEL = """
WITH ended AS (
    SELECT finished_at FROM job_results WHERE job_id = $1 AND tenant_id = $2 FOR UPDATE
), before AS (
    SELECT status FROM notifications
     WHERE id = $1 AND tenant_id = $2 AND channel LIKE 'task:%'
), c AS (
    UPDATE notifications SET status = 'cancelled', updated_at = now(), last_error = $3
     WHERE id = $1 AND tenant_id = $2 AND channel LIKE 'task:%'
       AND status IN ('scheduled', 'waiting', 'queued', 'delivering', 'retrying')
       AND NOT (status = 'delivering'
                AND EXISTS (SELECT 1 FROM ended WHERE finished_at IS NOT NULL))
    RETURNING id
), a AS (
    INSERT INTO audit (notification_id, status, detail) SELECT id, 'cancelled', $3 FROM c
)
SELECT (SELECT status FROM before) AS before, EXISTS (SELECT 1 FROM c) AS cancelled
"""

_REGISTRY = """
SELECT schema::text AS schema, priority, max_attempts FROM task_registry WHERE name = $1
"""


class RegisteredTask(msgspec.Struct, frozen=True):
    schema: dict[str, Any]
    priority: int
    max_attempts: int


class JobStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def get(self, tenant_id: str, job_id: str) -> JobDocument | None:
        row = await self._pool.fetchrow(_GET, job_id, tenant_id)
        return None if row is None else document(row)

    async def list(
        self, tenant_id: str, status: Status | None, task: str | None, before: str | None,
        limit: int,
    ) -> list[JobDocument]:  # fmt: skip
        channel = None if task is None else TASK_PREFIX + task
        rows = await self._pool.fetch(_LIST, tenant_id, status, channel, before, limit)
        return [document(row) for row in rows]

    async def cancel(self, tenant_id: str, job_id: str, by: str) -> tuple[str | None, bool]:
        """Cancel an unfinished task; return (status before, cancelled now)."""
        row = await self._pool.fetchrow(_CANCEL, job_id, tenant_id, f"cancelled by {by}")
        assert row is not None  # the statement always answers one row
        return row["before"], row["cancelled"]

    async def registered(self, name: str) -> RegisteredTask | None:
        """What a worker published of task ``name``, or None if no worker ever served it."""
        row = await self._pool.fetchrow(_REGISTRY, name)
        if row is None:
            return None
        return RegisteredTask(
            msgspec.json.decode(row["schema"]), row["priority"], row["max_attempts"]
        )


def document(row: Any) -> JobDocument:
    payload = msgspec.json.decode(row["payload"])
    cancelled = row["status"] == Status.CANCELLED  # a run's late result does not show
    error = None
    if row["error_type"] is not None or row["status"] == Status.FAILED:
        error = JobError(
            type=row["error_type"],
            message=row["error_message"] or row["last_error"],
            traceback=row["traceback"],
        )
    return JobDocument(
        id=row["id"],
        task=row["channel"].removeprefix(TASK_PREFIX),
        status=JOB_STATUS[Status(row["status"])],
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        args=payload.get("args", {}),
        progress=row["progress"],
        note=row["note"],
        result=None if row["result"] is None or cancelled else msgspec.json.decode(row["result"]),
        error=error,
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"]),
        started_at=_iso(row["started_at"]),
        finished_at=_iso(row["finished_at"]),
        reason=row["last_error"] if row["status"] == Status.CANCELLED else None,
    )


def _iso(value: datetime | None) -> Any:
    return None if value is None else value.isoformat()
