"""Every producer of notification work appends to the tenant's own lane with fairness between
tenants on (PULSE_TENANT_FAIRNESS, the default): scheduled sends when due, fallback steps,
receipts and dead-letter replays, as accepted notifications do; and a worker serves the
tenants' lanes whatever its own setting says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from bench.fairness import delivered, enqueue_for
from pulse.config import Settings
from pulse.core.models import JobKind
from pulse.core.timeutil import now_ms
from pulse.queue.consumer import Consumer
from pulse.queue.due import DueIndex
from pulse.queue.index import JobIndex
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.queue.tenant_streams import TenantStreams
from pulse.queue.transitions import EntryRef, SettledBatch, Transitions
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.queue_view import placed, waiting
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp
from tests.test_tenant_streams import job_of

pytestmark = pytest.mark.integration


async def lane_of(redis: Redis, keys: QueueKeys) -> dict[str, str]:
    """Job id -> the lane (stream) its entry waits in."""
    return {job_id: stream for job_id, (_, stream) in (await placed(redis, keys)).items()}


async def test_a_scheduled_notification_due_goes_to_its_tenants_lane_and_a_task_to_its_stream(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a notification of tenant "a" and a task, both scheduled and now due
    index = DueIndex(redis, keys, fair=True)
    notification = job_of("a", priority=3)
    task = msgspec.structs.replace(job_of("a", priority=3), kind=JobKind.TASK, channel="t.x")
    now = now_ms()
    await index.schedule([(notification, _at(now - 1000)), (task, _at(now - 1000))])

    # When the scheduler promotes them
    promoted = await index.promote(now, 10)

    # Then the notification waits in tenant a's lane of its priority, the task in its stream
    assert {job_id for job_id, _ in promoted.moved} == {notification.id, task.id}
    assert (await TenantStreams(redis, keys).active())[3] == ["a"]
    assert await lane_of(redis, keys) == {notification.id: keys.tenant_stream(3, "a")}
    assert await redis.xlen(keys.task_stream(3)) == 1
    assert await JobIndex(redis, keys).missing([notification.id, task.id]) == []


async def test_a_fallback_step_goes_to_its_tenants_lane(redis: Redis, keys: QueueKeys) -> None:
    # Given a notification in the shared lane (appended by an API with fairness off), read
    job = job_of("b", priority=1)
    await Publisher(redis, keys).publish([job])
    consumer = Consumer(redis, keys, "w")
    await consumer.ensure_group()
    [entry] = await consumer.read({keys.stream(1): 1})

    # When its channel fails for good and a worker with fairness on moves to the next step
    following = msgspec.structs.replace(job, step=1)
    moved = SettledBatch(fallbacks=[(EntryRef(entry.stream, entry.entry_id, job.id), following)])
    (await Transitions(redis, keys, "w", fair=True).apply(moved, now_ms())).raise_error()

    # Then the next step waits in tenant b's lane, and the shared lane holds nothing
    assert (await TenantStreams(redis, keys).active())[1] == ["b"]
    assert await waiting(redis, keys) == {job.id: 1}
    assert await lane_of(redis, keys) == {job.id: keys.tenant_stream(1, "b")}
    assert await redis.xlen(keys.stream(1)) == 0


async def test_a_receipt_goes_to_its_tenants_lane(redis: Redis, keys: QueueKeys) -> None:
    receipt = job_of("c", priority=2)
    applied = await Transitions(redis, keys, "w", fair=True).apply(
        SettledBatch(receipts=[receipt]), now_ms()
    )
    assert applied.streamed == 1
    assert (await TenantStreams(redis, keys).active())[2] == ["c"]
    assert await lane_of(redis, keys) == {receipt.id: keys.tenant_stream(2, "c")}


async def test_a_worker_with_fairness_off_still_serves_the_tenants_lanes(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given notifications an API with fairness on appended to two tenants' lanes
    prefix = settings.key_prefix
    ids = await enqueue_for(pool, redis, prefix, f"a-{prefix}", 5)
    ids += await enqueue_for(pool, redis, prefix, f"b-{prefix}", 5)

    # When a worker with fairness off runs
    start_worker(msgspec.structs.replace(settings, tenant_fairness=False))

    # Then every one is delivered
    for _ in range(600):
        if await delivered(pool, ids) == len(ids):
            break
        await asyncio.sleep(0.05)
    assert await delivered(pool, ids) == len(ids)


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


async def test_a_replayed_dead_letter_goes_to_its_tenants_lane(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    smtp: ScriptedSmtp,
    start_worker: WorkerFactory,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    # Given a notification dead after a temporary failure, and no worker running any more
    fast = msgspec.structs.replace(settings, smtp_port=smtp.port, worker_reclaim_interval_ms=50)
    running = start_worker(fast)
    body = EXAMPLE | {"recipient": "flaky1-eve@example.com", "max_attempts": 1}
    location = (await client.post("/api/notifications/", json=body, headers=auth)).headers[
        "Location"
    ]
    assert (await wait_for_status(client, auth, location, "failed"))["status"] == "failed"
    await running.shutdown()
    notification_id = location.rsplit("/", 1)[1]
    keys = QueueKeys(settings.key_prefix)
    tenant_id = await pool.fetchval(
        "SELECT tenant_id::text FROM notifications WHERE id = $1", notification_id
    )

    # When the tenant replays it
    listing = msgspec.json.decode(
        await (await client.get("/api/dead-letters", headers=auth)).read()
    )
    [item] = listing["items"]
    replayed = await client.post(f"/api/dead-letters/{item['id']}/replay", headers=auth)
    assert replayed.status == 202

    # Then it waits in its tenant's lane, and a worker delivers it from there
    assert await lane_of(redis, keys) == {notification_id: keys.tenant_stream(1, tenant_id)}
    start_worker(fast)
    document = await wait_for_status(client, auth, location, "delivered")
    assert document["status"] == "delivered"


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
