"""Retention: weekly partitions are created ahead; a week past the retention is dropped whole
when nothing in it is live, and kept (its finished rows deleted) when something is.

Each test gets a database of its own: a retention pass acts on every row of its database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.lock import ExpiringLock
from pulse.runtime.retention import Retention, RetentionSettings
from pulse.store.retention import PartitionStore
from pulse.store.tenants import NewTenant
from tests.conftest import Client, ServerUrls, fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    """Overrides the shared database with a fresh one for each test of this module."""
    async with fresh_database(server_urls.postgres, "pulse_retention") as url:
        yield url


def this_monday() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=now.weekday())


def made_at(at: datetime) -> str:
    return str(uuid7(int(at.timestamp() * 1000)))


def retention(pool: asyncpg.Pool, redis: Redis, keys: QueueKeys, metrics: Metrics) -> Retention:
    lock = ExpiringLock(redis, keys.lock("retention"), 60_000)
    return Retention(PartitionStore(pool), lock, RetentionSettings(days=1), metrics)


async def insert(pool: asyncpg.Pool, tenant_id: str, nid: str, status: str, **more: object) -> None:
    """A notification with its audit row and one attempt, as the API and a worker leave it."""
    await pool.execute(
        "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
        " status, max_attempts, send_at, receipt_for)"
        " VALUES ($1, $2, 'log', 'ops', '{}', 2, $3, 3, $4, $5)",
        nid, tenant_id, status, more.get("send_at"), more.get("receipt_for"),
    )  # fmt: skip
    await pool.execute("INSERT INTO audit (notification_id, status) VALUES ($1, $2)", nid, status)
    await pool.execute(
        "INSERT INTO attempts (notification_id, number, started_at, duration_ms, outcome, worker)"
        " VALUES ($1, 1, now(), 1.0, 'delivered', 'w')",
        nid,
    )


async def tables(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent IN ('notifications'::regclass, 'audit'::regclass,"
        " 'attempts'::regclass, 'job_results'::regclass)"
    )
    return {row[0] for row in rows}


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    found: int = await pool.fetchval(sql, *args)
    return found


async def test_creates_weeks_ahead_drops_a_finished_week_and_keeps_a_live_one(
    pool: asyncpg.Pool, redis: Redis, keys: QueueKeys, tenant: NewTenant
) -> None:
    # Given a finished week (a delivered notification with its audit, attempts, result, dead
    # letter and a delivered receipt made the next week) and a next week holding a delivered
    # notification and one scheduled far ahead
    monday = this_monday()
    week0, week1 = monday + timedelta(hours=1), monday + timedelta(days=8)
    done, receipt = made_at(week0), made_at(week1)
    delivered, scheduled = made_at(week1), made_at(week1)
    await insert(pool, tenant.tenant_id, done, "delivered")
    await pool.execute(
        "INSERT INTO job_results (job_id, tenant_id, result) VALUES ($1, $2, '1')",
        done,
        tenant.tenant_id,
    )
    await pool.execute(
        "INSERT INTO dead_letters (notification_id, tenant_id, reason, stream, entry_id)"
        " VALUES ($1, $2, 'failed', 's', '1-0')",
        done, tenant.tenant_id,
    )  # fmt: skip
    await insert(pool, tenant.tenant_id, receipt, "delivered", receipt_for=done)
    await insert(pool, tenant.tenant_id, delivered, "delivered")
    await insert(
        pool, tenant.tenant_id, scheduled, "scheduled", send_at=monday + timedelta(days=300)
    )
    in_cutoff_week = made_at(monday + timedelta(days=15))  # the week the cutoff falls in
    await insert(pool, tenant.tenant_id, in_cutoff_week, "delivered")
    metrics = Metrics()

    # When a retention pass of one day runs three weeks from now
    later = monday + timedelta(days=21, hours=1)
    done_pass = await retention(pool, redis, keys, metrics).run_once(later)

    # Then this week and the legacy partition are dropped with every row of theirs and every
    # row pointing at them; the next week stays for its scheduled notification, which keeps its
    # rows, while its delivered notification went row by row
    assert done_pass is not None
    week0_name = f"notifications_w{monday:%Y%m%d}"
    week1_name = f"notifications_w{monday + timedelta(days=7):%Y%m%d}"
    assert done_pass.dropped == ("notifications_legacy", week0_name)
    assert done_pass.kept == (week1_name,)
    left = await tables(pool)
    for table in ("notifications", "audit", "attempts", "job_results"):
        assert f"{table}_w{monday:%Y%m%d}" not in left
        assert f"{table}_legacy" not in left
        assert f"{table}_w{monday + timedelta(days=7):%Y%m%d}" in left
    ids = [done, receipt, delivered, scheduled, in_cutoff_week]
    kept = await pool.fetch("SELECT id::text, status FROM notifications WHERE id = ANY($1)", ids)
    assert sorted((row["id"], row["status"]) for row in kept) == sorted(
        [(scheduled, "scheduled"), (in_cutoff_week, "delivered")]
    )  # the week of the cutoff waits to be dropped whole, not deleted row by row
    assert (
        await count(pool, "SELECT count(*) FROM audit WHERE notification_id = $1", scheduled) == 1
    )
    gone_ids = [done, receipt, delivered]
    for table in ("audit", "attempts", "dead_letters"):
        sql = f"SELECT count(*) FROM {table} WHERE notification_id = ANY($1)"
        assert await count(pool, sql, gone_ids) == 0, table
    assert await count(pool, "SELECT count(*) FROM job_results WHERE job_id = $1", done) == 0
    assert done_pass.deleted == 1  # the next week's delivered one
    assert metrics.partitions_dropped._value.get() == 2

    # And the weeks ahead of "three weeks from now" exist, so nothing lands in the default
    for weeks in range(5):
        week = monday + timedelta(days=21 + 7 * weeks)
        for table in ("notifications", "audit", "attempts", "job_results"):
            assert f"{table}_w{week:%Y%m%d}" in left
    assert done_pass.created == 3 * 4  # three weeks beyond the migration's five, four tables

    # And a second pass finds nothing more to do
    again = await retention(pool, redis, keys, metrics).run_once(later)
    assert again is not None
    assert (again.created, again.dropped, again.kept, again.deleted) == (0, (), (week1_name,), 0)


async def test_a_week_with_a_row_finished_within_the_retention_stays(
    pool: asyncpg.Pool, redis: Redis, keys: QueueKeys, tenant: NewTenant
) -> None:
    # Given a week that ended long ago whose only notification (scheduled far ahead) was
    # delivered an hour before the pass
    monday = this_monday()
    later = monday + timedelta(days=21)
    late = made_at(monday + timedelta(hours=1))
    await insert(pool, tenant.tenant_id, late, "delivered")
    await pool.execute(
        "UPDATE notifications SET updated_at = $2 WHERE id = $1", late, later - timedelta(hours=1)
    )

    # When a retention pass of one day runs
    pass_ = await retention(pool, redis, keys, Metrics()).run_once(later)

    # Then the week stays, and the notification with all of its rows
    assert pass_ is not None
    assert pass_.kept == (f"notifications_w{monday:%Y%m%d}",)  # the empty ones went
    assert pass_.deleted == 0
    assert await count(pool, "SELECT count(*) FROM notifications WHERE id = $1", late) == 1
    assert await count(pool, "SELECT count(*) FROM attempts WHERE notification_id = $1", late) == 1


async def test_an_idempotent_replay_after_the_notification_was_dropped_answers_as_first(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    # Given a notification accepted with an Idempotency-Key, delivered, and its week dropped
    body = {"channel": "log", "recipient": "ops", "payload": {"message": "once"}}
    headers = auth | {"Idempotency-Key": "retained-once"}
    first = await client.post("/api/notifications/", json=body, headers=headers)
    assert first.status == 202, await first.text()
    first_body = await first.read()
    location = first.headers["Location"]
    await pool.execute("UPDATE notifications SET status = 'delivered', updated_at = now()")
    later = datetime.now(UTC) + timedelta(days=9)
    keys = QueueKeys(settings.key_prefix)
    pass_ = await retention(pool, redis, keys, Metrics()).run_once(later)
    assert pass_ is not None
    assert f"notifications_w{this_monday():%Y%m%d}" in pass_.dropped

    # When the client sends the same request again, then reads it
    again = await client.post("/api/notifications/", json=body, headers=headers)
    read = await client.get(location, headers=auth)

    # Then the replay answers as the first time (the key keeps its answer), and the
    # notification itself is gone: 404, not a 500
    assert again.status == 202
    assert await again.read() == first_body
    assert read.status == 404
