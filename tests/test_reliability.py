"""Never lose, never send twice: retries, leases, reclaiming, dead letters, reconciling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.timeutil import now_ms
from pulse.http.app import create_app
from pulse.queue.consumer import Consumer
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.pending import PendingEntries
from pulse.queue.publisher import Publisher
from pulse.queue.stats import QueueStats
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.queue_view import lanes
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler(slow_s=2.0)) as server:
        yield server


@pytest.fixture
def fast(settings: Settings, smtp: ScriptedSmtp) -> Settings:
    """Short backoff and reclaim interval so retries happen within the test."""
    return msgspec.structs.replace(
        settings,
        smtp_port=smtp.port,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        worker_reclaim_interval_ms=50,
    )


async def post(client: Client, auth: dict[str, str], **changes: Any) -> str:
    body = dict(EXAMPLE) | changes
    response = await client.post("/api/notifications/", json=body, headers=auth)
    assert response.status == 202, await response.text()
    return response.headers["Location"]


async def column(pool: asyncpg.Pool, sql: str, notification_id: str) -> list[Any]:
    return [row[0] for row in await pool.fetch(sql, notification_id)]


async def test_temporary_failures_retry_then_deliver_once(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    smtp: ScriptedSmtp,
    pool: asyncpg.Pool,
) -> None:
    # Given a recipient whose server answers 451 twice, then accepts
    start_worker(fast)
    location = await post(client, auth, recipient="flaky2-ann@example.com")

    # When the worker retries it
    document = await wait_for_status(client, auth, location, "delivered", "failed")

    # Then it is delivered on the third attempt, once, with every attempt recorded
    notification_id = str(document["id"])
    assert document["status"] == "delivered"
    assert smtp.handler.accepted[f"<{notification_id}@pulse>"] == 1
    attempts = await pool.fetch(
        "SELECT number, outcome, error_class FROM attempts WHERE notification_id = $1 ORDER BY id",
        notification_id,
    )
    assert [(a["number"], a["outcome"]) for a in attempts] == [
        (1, "retry"),
        (2, "retry"),
        (3, "delivered"),
    ]
    assert attempts[0]["error_class"] == "SMTP451"
    audit = await column(
        pool, "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id", notification_id
    )
    assert audit == ["queued"] + ["delivering", "retrying"] * 2 + ["delivering", "delivered"]


async def test_last_attempt_moves_to_dead_letters(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    start_worker(fast)
    location = await post(client, auth, recipient="flaky9-bob@example.com", max_attempts=2)

    document = await wait_for_status(client, auth, location, "delivered", "failed")

    assert document["status"] == "failed"
    assert "gave up after 2 attempts" in str(document["last_error"])
    await assert_dead_lettered(pool, redis, fast, str(document["id"]))


async def test_permanent_failure_goes_straight_to_dead_letters(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    start_worker(fast)
    location = await post(client, auth, recipient="reject-carl@example.com")

    document = await wait_for_status(client, auth, location, "delivered", "failed")

    assert document["status"] == "failed"
    assert document["attempts"] == 1
    assert "550" in str(document["last_error"])
    await assert_dead_lettered(pool, redis, fast, str(document["id"]))


async def assert_dead_lettered(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, notification_id: str
) -> None:
    """A dead-letter row, an entry in the dead-letter stream, nothing left pending."""
    keys = QueueKeys(settings.key_prefix)
    for _ in range(100):  # Redis is settled right after PostgreSQL; give it a moment
        if await redis.xlen(keys.dead_letters()) == 1:
            break
        await asyncio.sleep(0.02)
    reasons = await column(
        pool, "SELECT reason FROM dead_letters WHERE notification_id = $1", notification_id
    )
    assert len(reasons) == 1
    dead: Any = await redis.xrange(keys.dead_letters())
    assert [fields[b"job"].decode() for _, fields in dead] == [notification_id]
    priority = int(EXAMPLE["priority"])  # type: ignore[call-overload]
    queue = (await QueueStats(redis, keys).snapshot()).streams[priority]
    assert (queue.depth, queue.pending) == (0, 0)


async def test_slow_delivery_keeps_its_lease_against_a_second_worker(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    smtp: ScriptedSmtp,
    pool: asyncpg.Pool,
) -> None:
    # Given two workers with a lease far shorter than the provider's 2 s answer
    short_lease = msgspec.structs.replace(fast, worker_lease_ms=600)
    start_worker(short_lease)
    start_worker(short_lease)

    location = await post(client, auth, recipient="slow-dora@example.com")
    document = await wait_for_status(client, auth, location, "delivered", "failed")

    # Then the renewed lease kept the other worker off: one attempt, one mail
    notification_id = str(document["id"])
    assert document["status"] == "delivered"
    assert smtp.handler.accepted[f"<{notification_id}@pulse>"] == 1
    numbers = await column(
        pool, "SELECT number FROM attempts WHERE notification_id = $1", notification_id
    )
    assert numbers == [1]


async def test_abandoned_entries_come_back_after_the_lease(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    smtp: ScriptedSmtp,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    # Given an entry read by a consumer that then died (never acknowledged, never renewed)
    location = await post(client, auth)
    keys = QueueKeys(fast.key_prefix)
    dead_consumer = Consumer(
        redis, keys, "crashed-worker", [s for _, s in await lanes(redis, keys)]
    )
    await dead_consumer.ensure_group()
    assert len(await dead_consumer.wait(10, 100)) == 1

    # When a live worker with a 500 ms lease runs
    start_worker(msgspec.structs.replace(fast, worker_lease_ms=500))

    # Then it takes the entry back and delivers it, as attempt 2 (the stream's delivery count)
    document = await wait_for_status(client, auth, location, "delivered", "failed")
    assert document["status"] == "delivered"
    assert smtp.handler.accepted[f"<{document['id']}@pulse>"] == 1
    numbers = await column(
        pool, "SELECT number FROM attempts WHERE notification_id = $1", str(document["id"])
    )
    assert numbers == [2]


async def test_two_reclaimers_never_claim_one_entry_twice(settings: Settings, redis: Redis) -> None:
    from tests.test_codec import a_job

    keys = QueueKeys(settings.key_prefix)
    jobs = [a_job() for _ in range(300)]
    await Publisher(redis, keys).publish(jobs)
    crashed = Consumer(redis, keys, "crashed")
    await crashed.ensure_group()
    stream = keys.stream(1)
    assert len(await crashed.read({stream: 300})) == 300
    await asyncio.sleep(1.1)  # longer than the lease below: every entry is abandoned now

    # When two reclaimers race, several calls each, all at once
    reclaimers = [PendingEntries(redis, keys, f"reclaimer-{n}") for n in range(2)]
    batches = await asyncio.gather(
        *(r.reclaim(stream, now_ms(), lease_ms=1000, limit=100) for r in reclaimers * 4)
    )
    claimed = [entry.entry_id for batch in batches for entry in batch]

    # Then each entry went to exactly one of them
    assert len(claimed) == len(set(claimed)) == 300
    assert all(entry.attempt == 2 for batch in batches for entry in batch)  # delivery count


async def test_undecodable_entries_are_dead_lettered_with_their_raw_bytes(
    fast: Settings, start_worker: WorkerFactory, redis: Redis, pool: asyncpg.Pool
) -> None:
    keys = QueueKeys(fast.key_prefix)
    stream = keys.stream(2)
    garbage: Any = await redis.xadd(stream, {"m": b"\xc1 not msgpack"})
    foreign: Any = await redis.xadd(stream, {"x": b"y"})

    start_worker(fast)

    rows: list[Any] = []
    for _ in range(300):
        rows = await pool.fetch(
            "SELECT entry_id, raw FROM dead_letters WHERE stream = $1 ORDER BY entry_id", stream
        )
        if len(rows) == 2 and await redis.xlen(keys.dead_letters()) == 2:
            break
        await asyncio.sleep(0.02)
    assert [(r["entry_id"], bytes(r["raw"])) for r in rows] == [
        (garbage.decode(), b"\xc1 not msgpack"),
        (foreign.decode(), b""),
    ]
    entries: Any = await redis.xrange(keys.dead_letters())
    dead = {fields[b"entry"]: fields for _, fields in entries}
    assert dead[foreign][b"f:x"] == b"y"  # the raw fields travel with the dead letter
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0


async def test_redelivered_entry_of_a_delivered_notification_is_not_sent_again(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    smtp: ScriptedSmtp,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    start_worker(fast)
    location = await post(client, auth)
    document = await wait_for_status(client, auth, location, "delivered")

    # When a stale copy of its stream entry shows up (a replayed or duplicated XADD)
    from pulse.core.models import Job, JobKind

    notification_id = str(document["id"])
    row = await pool.fetchrow(
        "SELECT tenant_id::text FROM notifications WHERE id = $1", notification_id
    )
    assert row is not None
    stale = Job(
        id=notification_id,
        tenant_id=row[0],
        kind=JobKind.NOTIFICATION,
        channel="email",
        recipient="someone@example.com",
        payload=dict(EXAMPLE["payload"]),  # type: ignore[call-overload]
        priority=1,
        max_attempts=5,
    )
    keys = QueueKeys(fast.key_prefix)
    await Publisher(redis, keys).publish([stale])
    for _ in range(300):
        if await redis.xlen(keys.stream(1)) == 0:
            break
        await asyncio.sleep(0.02)

    # Then it is acknowledged without a second mail
    assert await redis.xlen(keys.stream(1)) == 0
    assert smtp.handler.accepted[f"<{notification_id}@pulse>"] == 1


async def test_api_answers_503_and_keeps_nothing_when_redis_is_down(
    settings: Settings, auth: dict[str, str], pool: asyncpg.Pool, tenant: Any
) -> None:
    down = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    async with TestClient(TestServer(create_app(down, channel_specs(down)))) as client:
        response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        problem = msgspec.json.decode(await response.read())

    assert response.status == 503
    assert response.headers["Retry-After"]
    assert problem["status"] == 503
    count = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    assert count == 0
