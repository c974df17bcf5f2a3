"""Retention of finished work: weekly partitions created ahead, whole weeks dropped once past
the retention, finished rows of weeks that must stay deleted in batches (sql/018).

A week is dropped only when nothing in it is live: no unfinished notification (scheduled up to
a year ahead, waiting for parents, retrying...), none updated since the cutoff (finished within
the retention), no unfinished receipt elsewhere pointing at it. Otherwise it stays, and only
its rows finished before the cutoff are deleted, a batch at a time, so live work is never lost.
Each drop is one transaction under a lock timeout: it locks the week against changes, then
checks it, deletes the week's rows in the plain tables that point at it (dead letters, job
dependencies, finished receipts of another week), drops the week's audit, attempts and
job_results partitions, then detaches and drops the notifications one. A lock not granted in
time (a long transaction on the tables) leaves the week for the next pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CHILD_TABLES = ("audit", "attempts", "job_results")
WEEKS_AHEAD = 4  # this week and the next four always have their partitions
_LOCK_KEY = 7075736503  # "pulse" + 3: one retention pass at a time, whatever the deployment
_LOCK_TIMEOUT = "'2s'"  # a waiting exclusive lock queues the accept path behind it
_NAME = re.compile(r"^notifications_(w\d{8}|legacy)$")
_MIN_ID = "00000000-0000-0000-0000-000000000000"

_ENSURE = """
SELECT coalesce(sum(pulse_create_week(
           date_trunc('week', $1::timestamptz AT TIME ZONE 'UTC')::date + 7 * w)), 0)::int
  FROM generate_series(0, $2::int) AS w
"""

# The weeks (and the legacy partition) that ended before the cutoff, oldest first.
_ENDED = """
SELECT c.relname AS name, c.reltuples::bigint AS estimate,
       (regexp_match(b.bound, 'FROM \\(''([0-9a-f-]+)''\\)'))[1]::uuid AS lo,
       (regexp_match(b.bound, 'TO \\(''([0-9a-f-]+)''\\)'))[1]::uuid AS hi
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid,
       LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
 WHERE i.inhparent = 'notifications'::regclass AND b.bound <> 'DEFAULT'
   AND (regexp_match(b.bound, 'TO \\(''([0-9a-f-]+)''\\)'))[1]::uuid <= pulse_id_bound($1)
 ORDER BY hi
"""

_FINISHED = "('delivered', 'failed', 'cancelled', 'skipped')"  # as notifications_unfinished says
_UNFINISHED = f"status NOT IN {_FINISHED}"

# Live: anything unfinished in the week, anything updated since the cutoff, an unfinished
# receipt elsewhere for one of its notifications, a dependency on one of them.
_LIVE = f"""
SELECT EXISTS (SELECT 1 FROM {{part}} WHERE {_UNFINISHED})
    OR EXISTS (SELECT 1 FROM {{part}} WHERE updated_at >= $3)
    OR EXISTS (SELECT 1 FROM notifications
                WHERE receipt_for >= $1 AND receipt_for < $2 AND {_UNFINISHED})
    OR EXISTS (SELECT 1 FROM job_dependencies WHERE parent_id >= $1 AND parent_id < $2)
"""

_DROP_POINTERS = (
    "DELETE FROM notifications WHERE receipt_for >= $1 AND receipt_for < $2"
    " AND NOT (id >= $1 AND id < $2)",
    "DELETE FROM dead_letters WHERE notification_id >= $1 AND notification_id < $2",
    "DELETE FROM job_dependencies WHERE child_id >= $1 AND child_id < $2",
)

# Finished before the cutoff, in a week that ended before the week of the cutoff began (a week
# that stayed, or the default partition), with no unfinished receipt and no dependent: deleted
# with their rows (foreign keys' ON DELETE CASCADE; audit and attempts by sql/023's trigger).
# Rows of the cutoff's own week wait for its drop: a rolling delete of each hour's rows would
# be the DELETE of millions the partitions avoid.
_DELETE_FINISHED = f"""
WITH doomed AS (
    SELECT n.id FROM notifications n
     WHERE n.id < pulse_id_bound(date_trunc('week', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
       AND n.status IN {_FINISHED} AND n.updated_at < $1
       AND NOT EXISTS (SELECT 1 FROM notifications r
                        WHERE r.receipt_for = n.id AND r.{_UNFINISHED})
       AND NOT EXISTS (SELECT 1 FROM job_dependencies d WHERE d.parent_id = n.id)
     LIMIT $2)
DELETE FROM notifications WHERE id IN (SELECT id FROM doomed)
"""

_DELETE_UNDECODABLE = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM dead_letters WHERE notification_id IS NULL AND dead_at < $1 LIMIT $2)
"""

# Batches are their notifications' request: expanded ones go with the same cutoff, by id range.
_DELETE_BATCHES = """
DELETE FROM batches WHERE id IN (
    SELECT id FROM batches WHERE id < pulse_id_bound($1) AND expanded_at IS NOT NULL LIMIT $2)
"""


@dataclass(frozen=True, slots=True)
class EndedWeek:
    """A notifications partition whose period ended before the cutoff."""

    name: str
    lo: str  # its lower bound (the smallest id for the legacy partition)
    hi: str
    estimate: int  # PostgreSQL's estimate of its rows (pg_class.reltuples)

    def child(self, table: str) -> str:
        return table + self.name.removeprefix("notifications")


@dataclass(frozen=True, slots=True)
class Dropped:
    name: str
    estimate: int


class PartitionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure_weeks(self, now: datetime, ahead: int = WEEKS_AHEAD) -> int:
        """Create the partitions of this week and the next ``ahead``; return how many were new."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {_LOCK_TIMEOUT}")
            made: int = await conn.fetchval(_ENSURE, now, ahead)
            return made

    async def ended_weeks(self, cutoff: datetime) -> list[EndedWeek]:
        rows = await self._pool.fetch(_ENDED, cutoff)
        return [
            EndedWeek(
                row["name"], str(row["lo"] or _MIN_ID), str(row["hi"]), max(0, row["estimate"])
            )
            for row in rows
            if _NAME.match(row["name"])
        ]

    async def drop_if_done(self, week: EndedWeek, cutoff: datetime) -> Dropped | None:
        """Drop the week's partitions if nothing in them is live; None when it stays."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {_LOCK_TIMEOUT}")
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
                return None
            part = week.name  # from pg_class, matched against _NAME: safe to splice
            await conn.execute(f"LOCK TABLE {part} IN SHARE MODE")
            if await conn.fetchval(_LIVE.format(part=part), week.lo, week.hi, cutoff):
                return None
            for statement in _DROP_POINTERS:
                await conn.execute(statement, week.lo, week.hi)
            for table in CHILD_TABLES:
                await conn.execute(f"DROP TABLE IF EXISTS {week.child(table)}")
            await conn.execute(f"ALTER TABLE notifications DETACH PARTITION {part}")
            await conn.execute(f"DROP TABLE {part}")
        return Dropped(part, week.estimate)

    async def delete_finished(self, cutoff: datetime, batch: int) -> int:
        """Delete up to ``batch`` notifications finished before the cutoff in weeks that stay."""
        return _count(await self._pool.execute(_DELETE_FINISHED, cutoff, batch))

    async def delete_undecodable(self, cutoff: datetime, batch: int) -> int:
        return _count(await self._pool.execute(_DELETE_UNDECODABLE, cutoff, batch))

    async def delete_batches(self, cutoff: datetime, batch: int) -> int:
        return _count(await self._pool.execute(_DELETE_BATCHES, cutoff, batch))


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])
