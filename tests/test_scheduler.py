"""The due-time index and the scheduler: streamed once each by any number of schedulers, in
due order, never early; the claim when the record lags or the time moved; the reconciler
rebuilding a lost index without streaming anything early.

A database of its own per test: the reconciler adopts every scheduled row of its database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.models import Job
from pulse.core.timeutil import now_ms
from pulse.queue.due import DueIndex, due_ms
from pulse.queue.index import JobIndex
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.publisher import Publisher
from pulse.runtime.reindex import DueReindexer
from pulse.store.ledger import DeliveryLedger
from pulse.store.rows import JOB_COLUMNS, job_from_row
from pulse.store.scheduled import _DUE, ScheduledStore
from tests.conftest import (
    Client,
    ServerUrls,
    WorkerFactory,
    fresh_database,
    log_job,
    wait_for_status,
)
from tests.queue_view import waiting

pytestmark = pytest.mark.integration

LOG = {"recipient": "ops", "channel": "log", "payload": {"message": "later"}}


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    async with fresh_database(server_urls.postgres, "pulse_sched") as url:
        yield url


async def schedule(client: Client, auth: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await client.post("/api/notifications/", json=LOG | changes, headers=auth)
    body: dict[str, Any] = msgspec.json.decode(await response.read())
    assert response.status == 202, body
    assert body["status"] == "scheduled"
    return body


async def history(pool: asyncpg.Pool, notification_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT status, detail FROM audit WHERE notification_id = $1 ORDER BY id", notification_id
    )
    return [(row[0], row[1]) for row in rows]


async def test_concurrent_schedulers_stream_each_due_job_exactly_once(
    redis: Redis, redis_url: str, keys: QueueKeys
) -> None:
    # Given 600 jobs due now over every priority, and 4 schedulers of their own connections
    now = datetime.now(UTC)
    jobs = [log_job(priority=i % 5) for i in range(600)]
    await DueIndex(redis, keys).schedule([(job, now) for job in jobs])
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    indexes = [DueIndex(client, keys) for client in clients]

    # When they all promote at once, 50 at a time, until nothing is due
    async def drain(index: DueIndex) -> list[str]:
        moved: list[str] = []
        while batch := (await index.promote(now_ms(), 50)).moved:
            moved += [job_id for job_id, _ in batch]
        return moved

    results = await asyncio.gather(*(drain(index) for index in indexes))
    for each in clients:
        await each.aclose()

    # Then every job was streamed exactly once, and the index knows each one's entry
    streamed = [job_id for result in results for job_id in result]
    assert sorted(streamed) == sorted(job.id for job in jobs)
    lengths = [await redis.xlen(keys.stream(p)) for p in range(5)]
    assert lengths == [120] * 5
    assert await JobIndex(redis, keys).missing([job.id for job in jobs]) == []
    assert await redis.hlen(keys.scheduled_jobs()) == 0


async def test_promote_streams_in_due_order_and_never_early(redis: Redis, keys: QueueKeys) -> None:
    # Given jobs of one priority due 3, 1 and 2 s ago, and one due in a minute
    now = datetime.now(UTC)
    late = [log_job() for _ in range(3)]
    future = log_job()
    index = DueIndex(redis, keys)
    await index.schedule(
        [(late[0], now - timedelta(seconds=3)), (late[1], now - timedelta(seconds=1)),
         (late[2], now - timedelta(seconds=2)), (future, now + timedelta(minutes=1))]
    )  # fmt: skip
    # When one promotion runs
    promoted = await index.promote(now_ms(), 100)
    # Then the due ones are streamed in due order, the future one stays and is next due
    assert [job_id for job_id, _ in promoted.moved] == [late[0].id, late[2].id, late[1].id]
    assert await redis.xlen(keys.stream(2)) == 3
    assert promoted.next_due_ms == due_ms(now + timedelta(minutes=1))
    assert await index.due_of(future.id, 2) == promoted.next_due_ms


async def test_the_claim_accepts_a_due_row_the_scheduler_did_not_record(
    client: Client, auth: dict[str, str], settings: Settings, start_worker: WorkerFactory,
    redis: Redis, keys: QueueKeys, pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given a scheduled notification streamed by a scheduler that died before recording it
    body = await schedule(client, auth, delay_s=0.3)
    await asyncio.sleep(0.4)
    moved = (await DueIndex(redis, keys).promote(now_ms(), 10)).moved
    assert [job_id for job_id, _ in moved] == [body["id"]]
    assert (await pool.fetchval("SELECT status FROM notifications WHERE id = $1", body["id"])
            == "scheduled")  # fmt: skip
    # When a worker reads it
    start_worker(settings)
    done = await wait_for_status(client, auth, f"/api/notifications/{body['id']}", "delivered")
    # Then it is delivered once, and its history says it was queued when due
    assert done["status"] == "delivered"
    statuses = [status for status, _ in await history(pool, body["id"])]
    assert statuses == ["scheduled", "queued", "delivering", "delivered"]


async def test_an_early_entry_of_a_rescheduled_notification_is_not_sent(
    client: Client, auth: dict[str, str], settings: Settings, start_worker: WorkerFactory,
    redis: Redis, keys: QueueKeys, pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given a notification due in an hour whose job reached the stream anyway (streamed by a
    # scheduler just before it was rescheduled later)
    body = await schedule(client, auth, delay_s=3600)
    row = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM notifications WHERE id = $1", body["id"])
    await Publisher(redis, keys).publish([job_from_row(row)])
    # When a worker reads the entry
    start_worker(settings)
    for _ in range(200):
        if await redis.xlen(keys.stream(2)) == 0:
            break
        await asyncio.sleep(0.05)
    # Then the entry is acknowledged without sending; the notification is still scheduled
    assert await redis.xlen(keys.stream(2)) == 0
    pending = await redis.xpending(keys.stream(2), CONSUMER_GROUP)
    assert pending["pending"] == 0
    assert [status for status, _ in await history(pool, body["id"])] == ["scheduled"]
    assert await pool.fetchval(
        "SELECT count(*) FROM attempts WHERE notification_id = $1", body["id"]
    ) == 0  # fmt: skip
    # and its due-time entry is still there, for an hour from now
    assert await DueIndex(redis, keys).due_of(body["id"], 2) is not None


async def test_the_reconciler_rebuilds_a_lost_due_index_without_streaming_early(
    client: Client, auth: dict[str, str], settings: Settings, start_worker: WorkerFactory,
    redis: Redis, keys: QueueKeys, pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given scheduled notifications (one due in 2 s, one in an hour) whose index Redis lost
    soon = await schedule(client, auth, delay_s=2)
    later = await schedule(client, auth, delay_s=3600)
    await redis.delete(*keys.all_scheduled(), keys.scheduled_jobs())
    # When the reconciler's re-index pass runs
    reindexer = DueReindexer(ScheduledStore(pool), DueIndex(redis, keys))
    assert await reindexer.reindex(older_than_s=0.001) == 2
    # Then both are back in the index with their due times, and nothing was streamed
    index = DueIndex(redis, keys)
    for body in (soon, later):
        due = datetime.fromisoformat(body["send_at"])
        assert await index.due_of(body["id"], 2) == due_ms(due)
    assert await waiting(redis, keys) == {}
    # and a second pass finds nothing missing
    assert await reindexer.reindex(older_than_s=0.001) == 0
    # and once a worker runs, the due one is delivered once, not before its time
    start_worker(settings)
    await wait_for_status(client, auth, f"/api/notifications/{soon['id']}", "delivered")
    delivered_at = await pool.fetchval(
        "SELECT delivered_at FROM notifications WHERE id = $1", soon["id"]
    )
    assert delivered_at >= datetime.fromisoformat(soon["send_at"])
    assert [s for s, _ in await history(pool, later["id"])] == ["scheduled"]


async def test_a_streamed_job_is_not_indexed_again(
    client: Client, auth: dict[str, str], redis: Redis, keys: QueueKeys, pool: asyncpg.Pool
) -> None:
    # Given a scheduled notification already streamed (its row not yet recorded as queued)
    body = await schedule(client, auth, delay_s=0.2)
    await asyncio.sleep(0.3)
    await DueIndex(redis, keys).promote(now_ms(), 10)
    # When the reconciler's re-index pass runs
    reindexed = await DueReindexer(ScheduledStore(pool), DueIndex(redis, keys)).reindex(0.001)
    # Then it is left in its stream, not put back in the index
    assert reindexed == 0
    assert await DueIndex(redis, keys).due_of(body["id"], 2) is None
    assert await redis.xlen(keys.stream(2)) == 1


async def test_a_claim_racing_the_schedulers_record_writes_one_queued_row(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Given a due scheduled notification whose record the scheduler is committing right now
    body = await schedule(client, auth, delay_s=0.2)
    await asyncio.sleep(0.3)
    row = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM notifications WHERE id = $1", body["id"])
    job: Job = job_from_row(row)
    async with pool.acquire() as recorder:
        transaction = recorder.transaction()
        await transaction.start()
        await recorder.execute(_DUE, [job.id], "scheduler")
        # When a worker's claim starts meanwhile (it sees the row 'scheduled', then waits)
        claim = asyncio.create_task(DeliveryLedger(pool).claim([job], "worker", 30))
        await wait_for_lock_wait(pool)
        await transaction.commit()
        claimed = await claim
    # Then it is claimed, and its history says 'queued' once
    assert claimed.claimed == {job.id}
    statuses = [status for status, _ in await history(pool, job.id)]
    assert statuses == ["scheduled", "queued", "delivering"]


async def wait_for_lock_wait(pool: asyncpg.Pool) -> None:
    """Until some session of this database waits for a row lock."""
    for _ in range(200):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the claim never waited for the row lock")
