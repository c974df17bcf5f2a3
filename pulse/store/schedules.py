"""Cron schedules as the API edits them and the cron leader advances them.

Edits are optimistic (``version``): the API computes the new row, the write requires the
version it read, so an edit never silently undoes another. The leader's advance requires the
version it planned with and its fencing token (``pulse/store/cron_fence.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from pulse.core.jobs import TaskName
from pulse.core.models import MaxAttempts, PriorityLevel
from pulse.store.tenants import Connection

_COLUMNS = (
    "id::text AS id, tenant_id::text AS tenant_id, cron, timezone,"
    " notification::text AS notification, job::text AS job, starts_at, ends_at, misfire,"
    " catch_up_limit, paused,"
    " cursor_at, next_fire_at, last_fired_at, fired, skipped, version, created_at, updated_at"
)
_FENCED = "EXISTS (SELECT 1 FROM cron_fences f WHERE f.deployment = $2 AND f.token = $3)"
_ADVANCE = (
    "UPDATE schedules SET cursor_at = $5, next_fire_at = $6, fired = fired + $7,"
    " skipped = skipped + $8, last_fired_at = CASE WHEN $7 > 0 THEN $5 ELSE last_fired_at END"
    f" WHERE id = $1 AND version = $4 AND cursor_at < $5 AND NOT paused AND {_FENCED}"
)


class NotificationTemplate(msgspec.Struct, kw_only=True):
    """What each occurrence creates, as the API checked it (``POST /api/notifications/``'s
    body with recipients normalised). ``max_attempts`` None: the deployment's default."""

    recipient: str
    channel: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int | None = None
    metadata: dict[str, str] | None = None
    fallback: list[dict[str, Any]] | None = None


class JobTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The task job a schedule enqueues at each occurrence (``POST /api/jobs/``'s body without
    deferral or dependencies). ``priority``/``max_attempts`` None: the task's defaults."""

    task: TaskName
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: PriorityLevel | None = None
    max_attempts: MaxAttempts | None = None


class Schedule(msgspec.Struct, kw_only=True):
    """One row. ``notification`` is the checked request (JSON text), recipients normalised;
    or, for a schedule that enqueues a task job, ``job`` (a checked ``JobTemplate``)."""

    id: str
    tenant_id: str
    cron: str
    timezone: str
    notification: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    misfire: str
    catch_up_limit: int
    paused: bool
    cursor_at: datetime
    next_fire_at: datetime | None
    last_fired_at: datetime | None = None
    fired: int = 0
    skipped: int = 0
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    job: str | None = None


@dataclass(frozen=True, slots=True)
class Advance:
    """The leader's move of one schedule's cursor past ``cursor_at``."""

    schedule_id: str
    version: int
    cursor_at: datetime
    next_fire_at: datetime | None
    fired: int = 0
    skipped: int = 0


def _schedule(row: asyncpg.Record | None) -> Schedule | None:
    return None if row is None else Schedule(**dict(row))


class ScheduleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, new: Schedule, deployment: str, max_per_tenant: int | None = None
    ) -> Schedule | None:
        """Insert ``new``; None when its tenant has ``max_per_tenant`` schedules already (counted
        under a lock per tenant, so twin creates cannot both pass the bound)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if max_per_tenant is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('pulse.schedules:' || $1, 0))",
                    new.tenant_id,
                )
                held: int = await conn.fetchval(
                    "SELECT count(*) FROM schedules WHERE tenant_id = $1", new.tenant_id
                )
                if held >= max_per_tenant:
                    return None
            row = await conn.fetchrow(
                "INSERT INTO schedules (id, tenant_id, deployment, cron, timezone, notification,"
                " starts_at, ends_at, misfire, catch_up_limit, paused, cursor_at, next_fire_at,"
                " job)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13,"
                f" $14::jsonb) RETURNING {_COLUMNS}",
                new.id, new.tenant_id, deployment, new.cron, new.timezone, new.notification,
                new.starts_at, new.ends_at, new.misfire, new.catch_up_limit, new.paused,
                new.cursor_at, new.next_fire_at, new.job,
            )  # fmt: skip
        return _schedule(row)

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM schedules WHERE id = $1 AND tenant_id = $2",
            schedule_id,
            tenant_id,
        )
        return _schedule(row)

    async def page(self, tenant_id: str, after_id: str | None, limit: int) -> list[Schedule]:
        """Oldest first (ids are UUIDv7), after the cursor ``after_id``."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = $1"
            " AND ($2::uuid IS NULL OR id > $2::uuid) ORDER BY id LIMIT $3",
            tenant_id,
            after_id,
            limit,
        )
        return [Schedule(**dict(row)) for row in rows]

    async def replace(self, edited: Schedule) -> Schedule | None:
        """Write the edited row if nobody changed it since it was read (its ``version``);
        None when it is gone or was changed meanwhile."""
        row = await self._pool.fetchrow(
            "UPDATE schedules SET cron = $3, timezone = $4, notification = $5::jsonb,"
            " starts_at = $6, ends_at = $7, misfire = $8, catch_up_limit = $9, paused = $10,"
            " cursor_at = $11, next_fire_at = $12, version = version + 1, updated_at = now(),"
            " job = $14::jsonb"
            f" WHERE id = $1 AND tenant_id = $2 AND version = $13 RETURNING {_COLUMNS}",
            edited.id, edited.tenant_id, edited.cron, edited.timezone, edited.notification,
            edited.starts_at, edited.ends_at, edited.misfire, edited.catch_up_limit,
            edited.paused, edited.cursor_at, edited.next_fire_at, edited.version, edited.job,
        )  # fmt: skip
        return _schedule(row)

    async def adopt(self, schedule_id: str, origin: str) -> None:
        """Mark a schedule as declared by the task module ``origin``."""
        await self._pool.execute(
            "UPDATE schedules SET origin = $2 WHERE id = $1 AND origin IS DISTINCT FROM $2",
            schedule_id, origin,
        )  # fmt: skip

    async def retire(
        self, tenant_id: str, deployment: str, origin: str, keep: list[str]
    ) -> list[str]:
        """Delete the tenant's schedules ``origin`` declared before but no longer does (not in
        ``keep``); answer their ids. Another tenant's are its own deployment's business."""
        rows = await self._pool.fetch(
            "DELETE FROM schedules WHERE tenant_id = $1 AND deployment = $2 AND origin = $3"
            " AND NOT (id = ANY($4::uuid[])) RETURNING id::text",
            tenant_id, deployment, origin, keep,
        )  # fmt: skip
        return [row[0] for row in rows]

    async def delete(self, tenant_id: str, schedule_id: str) -> bool:
        result: str = await self._pool.execute(
            "DELETE FROM schedules WHERE id = $1 AND tenant_id = $2", schedule_id, tenant_id
        )
        return result.endswith(" 1")

    async def due(
        self, deployment: str, now: datetime, limit: int, after: datetime | None = None
    ) -> list[Schedule]:
        """Active schedules of this deployment with an occurrence in ``(after, now]``, taken in
        turns by tenant (each tenant's first, then each one's second, ...; oldest first within a
        turn), so one tenant's many schedules cannot fill the page ahead of another's."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM (SELECT *, row_number() OVER"
            " (PARTITION BY tenant_id ORDER BY next_fire_at, id) AS turn FROM schedules"
            " WHERE deployment = $1 AND NOT paused AND next_fire_at <= $2"
            " AND ($4::timestamptz IS NULL OR next_fire_at > $4)) AS due"
            " ORDER BY turn, next_fire_at, id LIMIT $3",
            deployment,
            now,
            limit,
            after,
        )
        return [Schedule(**dict(row)) for row in rows]

    async def advance(self, move: Advance, deployment: str, token: int) -> bool:
        """Move the cursor forward, only while ``token`` is the deployment's fence and the
        schedule is as planned (same version, not paused, cursor not yet past); False
        otherwise."""
        return await advance_on(self._pool, move, deployment, token)


async def advance_on(
    conn: Connection | asyncpg.Pool, move: Advance, deployment: str, token: int
) -> bool:
    """``ScheduleStore.advance`` on ``conn``: inside the transaction that commits a fire."""
    result: str = await conn.execute(
        _ADVANCE, move.schedule_id, deployment, token, move.version, move.cursor_at,
        move.next_fire_at, move.fired, move.skipped,
    )  # fmt: skip
    return result.endswith(" 1")
