"""Committing several task jobs at once: a batch, a chain link (``after``), a group.

One transaction writes every row, its audit row and its dependencies (sql/014_task_flows.sql).
Parents that already exist are read ``FOR SHARE`` first: a parent cannot end between the read
and the commit, so a child is never left waiting on a parent that ended unseen (the parent's
end waits for this commit, and its trigger then finds the child's dependency rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from pulse.core.models import Status
from pulse.store.idempotency import Remembered, remember_cte
from pulse.store.tenants import Connection

_PARENTS = """
SELECT id::text AS id, status FROM notifications
 WHERE id = ANY($1::uuid[]) AND tenant_id = $2 AND channel LIKE 'task:%'
"""

_LOCK_PARENTS = _PARENTS + " FOR SHARE"

_INSERT = """
WITH n AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts, last_error,
         send_at)
    SELECT u.id, $2::uuid, u.channel, u.recipient, u.payload, u.priority, u.status,
           u.max_attempts, u.reason, u.send_at
      FROM unnest($1::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::smallint[], $7::text[],
                  $8::smallint[], $9::text[], $12::timestamptz[])
           AS u(id, channel, recipient, payload, priority, status, max_attempts, reason, send_at)
    RETURNING id, status, last_error, created_at, send_at
), a AS (
    INSERT INTO audit (notification_id, status, detail)
    SELECT id, status,
           CASE WHEN status = 'scheduled' THEN 'due ' || send_at::text ELSE last_error END
      FROM n
), d AS (
    INSERT INTO job_dependencies (child_id, parent_id)
    SELECT * FROM unnest($10::uuid[], $11::uuid[])
)
SELECT max(created_at) FROM n
"""

_REMEMBER = f"WITH {remember_cte('$1::uuid', 2)} SELECT count(*) FROM k"

_WITHDRAW = """
DELETE FROM notifications
 WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'scheduled', 'waiting', 'cancelled')
"""

FAILED_PARENT = {Status.FAILED: "failed", Status.CANCELLED: "was cancelled"}


@dataclass(frozen=True, slots=True)
class NewTaskJob:
    id: str
    channel: str
    recipient: str
    payload_json: bytes
    priority: int
    max_attempts: int
    after: tuple[str, ...] = ()  # parents: existing jobs or others of the same commit
    send_at: datetime | None = None  # deferred: 'scheduled' until then (never with ``after``)


@dataclass(slots=True)
class Written:
    """What the commit decided: when, and which jobs are queued now (to stream)."""

    created_at: datetime
    status: dict[str, Status] = field(default_factory=dict)

    @property
    def queued(self) -> list[str]:
        return [job_id for job_id, status in self.status.items() if status == Status.QUEUED]

    @property
    def scheduled(self) -> list[str]:
        return [job_id for job_id, status in self.status.items() if status == Status.SCHEDULED]


def decide(
    jobs: Sequence[NewTaskJob], parents: dict[str, str]
) -> tuple[dict[str, tuple[Status, str | None]], list[tuple[str, str]]]:
    """Each job's first status (and reason) and the dependency rows, from the statuses of the
    existing parents: a failed or cancelled parent cancels the child now, a succeeded one is
    no dependency, any other (or one of this commit) is."""
    new = {job.id for job in jobs}
    first: dict[str, tuple[Status, str | None]] = {}
    dependencies: list[tuple[str, str]] = []
    for job in jobs:
        status, reason, waits = _first(job, new, parents)
        first[job.id] = (status, reason)
        dependencies += [(job.id, parent) for parent in waits]
    # a child of a job of this commit cancelled now is cancelled too (no trigger tells it)
    changed = True
    while changed:
        changed = False
        for child, parent in dependencies:
            cancelled = parent in first and first[parent][0] == Status.CANCELLED
            if cancelled and first[child][0] == Status.WAITING:
                first[child] = (Status.CANCELLED, f"parent {parent} was cancelled")
                changed = True
    dependencies = [(c, p) for c, p in dependencies if first[c][0] == Status.WAITING]
    return first, dependencies


def _first(
    job: NewTaskJob, new: set[str], parents: dict[str, str]
) -> tuple[Status, str | None, list[str]]:
    if job.send_at is not None:
        return Status.SCHEDULED, None, []
    waits = []
    for parent in job.after:
        if parent in new:
            waits.append(parent)
            continue
        known = parents.get(parent)
        if known is None:
            return Status.CANCELLED, f"parent {parent} does not exist", []
        if Status(known) in FAILED_PARENT:
            return Status.CANCELLED, f"parent {parent} {FAILED_PARENT[Status(known)]}", []
        if known != Status.DELIVERED:
            waits.append(parent)
    return (Status.WAITING if waits else Status.QUEUED), None, waits


class TaskJobStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def parents(self, tenant_id: str, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of ``ids`` that is a task job of the tenant."""
        rows = await self._pool.fetch(_PARENTS, list(ids), tenant_id)
        return {row["id"]: row["status"] for row in rows}

    async def insert(self, tenant_id: str, jobs: Sequence[NewTaskJob]) -> Written:
        async with self._pool.acquire() as conn, conn.transaction():
            return await self.write(conn, tenant_id, jobs)

    async def insert_keyed(
        self, conn: Connection, tenant_id: str, jobs: Sequence[NewTaskJob], answer: Remembered
    ) -> Written | None:
        """In the key's claim transaction; None (nothing written): the key was answered."""
        if not await conn.fetchval(_REMEMBER, tenant_id, *answer.args()):
            return None
        return await self.write(conn, tenant_id, jobs)

    @staticmethod
    async def write(conn: Connection, tenant_id: str, jobs: Sequence[NewTaskJob]) -> Written:
        new = {job.id for job in jobs}
        existing = sorted({p for job in jobs for p in job.after if p not in new})
        rows = await conn.fetch(_LOCK_PARENTS, existing, tenant_id) if existing else []
        first, dependencies = decide(jobs, {row["id"]: row["status"] for row in rows})
        created_at: datetime = await conn.fetchval(
            _INSERT,
            [job.id for job in jobs],
            tenant_id,
            [job.channel for job in jobs],
            [job.recipient for job in jobs],
            [job.payload_json.decode() for job in jobs],
            [job.priority for job in jobs],
            [first[job.id][0].value for job in jobs],
            [job.max_attempts for job in jobs],
            [first[job.id][1] for job in jobs],
            [child for child, _ in dependencies],
            [parent for _, parent in dependencies],
            [job.send_at for job in jobs],
        )
        return Written(created_at, {job_id: status for job_id, (status, _) in first.items()})

    async def withdraw(self, ids: Sequence[str]) -> None:
        """Remove jobs the API could not stream (its client got a 503)."""
        await self._pool.execute(_WITHDRAW, list(ids))
