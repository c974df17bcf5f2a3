"""Lowering PULSE_REDIS_PARTITIONS: the count Redis remembers, and a drain from three partitions
by a one-partition worker that delivers everything once and leaves no key of the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import build_channels, channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.codec import decode_job, encode_job
from pulse.queue.consumer import entries_of
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys, keys_for
from pulse.queue.partitions import PartitionCount, served_keys
from pulse.queue.transitions import EntryRef, SettledBatch, Transitions
from pulse.runtime.worker import build_worker
from tests.conftest import EXAMPLE, Client, RunningWorker, log_job, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration

LOG = {"recipient": "ops", "channel": "log", "payload": {"message": "hi"}}


async def test_the_count_is_raised_to_the_highest_and_lowered_only_from_its_top(
    redis: Redis, settings: Settings
) -> None:
    # Given processes configured with 1, 3 and 2 partitions starting one after another
    def count(partitions: int) -> PartitionCount:
        return PartitionCount(redis, QueueKeys(settings.key_prefix, partitions=partitions))

    # When each raises the remembered count to its own
    seen = [await count(n).remember() for n in (1, 3, 2)]

    # Then each is told the highest so far, and Redis keeps it
    assert seen == [1, 3, 3]
    key = QueueKeys(settings.key_prefix).partition_count()
    assert await redis.get(key) == b"3"
    # a lowering that expects another top changes nothing; one from the top does
    assert await count(1).lower(1) == 3
    assert await count(1).lower(2) == 2
    # and raising again afterwards works
    assert await count(3).remember() == 3
    assert await redis.get(key) == b"3"


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestClient(TestServer(app)) as client:
        yield client


async def start(settings: Settings, redis: Redis, pool: asyncpg.Pool) -> RunningWorker:
    """A worker as ``pulse worker`` builds it: serving the partitions Redis remembers."""
    keys = await served_keys(redis, keys_for(settings))
    channels = build_channels(settings, quiet_log=True)
    instance = build_worker(settings, redis, pool, channels, Metrics(), keys=keys)
    stop = asyncio.Event()
    return RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)


async def post_into_retiring(
    client: Client, auth: dict[str, str], body: Callable[[int], dict[str, Any]], keys: QueueKeys
) -> list[str]:
    """Post until a notification's id lands in partition 1 or 2: the ids posted, that one
    last (the others, in partition 0, must be served all the same)."""
    posted = []
    for i in range(40):
        response = await client.post("/api/notifications/", json=body(i), headers=auth)
        assert response.status in (201, 202), await response.text()
        posted.append(str(msgspec.json.decode(await response.read())["id"]))
        if keys.partition_of(posted[-1]) > 0:
            return posted
    raise AssertionError("no id landed outside partition 0")


async def retries_due_soon(redis: Redis, prefix: str) -> int:
    """Bring every waiting retry's due time to half a second from now (the test does not wait
    out a backoff); how many wait."""
    due = int(time.time() * 1000) + 500
    waiting = 0
    for tags in ("{" + prefix + "}", "{" + prefix + "#*}"):
        async for schedule in redis.scan_iter(match=tags + ":stream:*:retry"):
            entry_ids: Any = await redis.zrange(schedule, 0, -1)
            for entry_id in entry_ids:
                changed: Any = await redis.zadd(schedule, {entry_id: due}, xx=True, ch=True)
                waiting += int(changed)
    return waiting


async def partition_keys_left(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match="{" + prefix + "#*")]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds (the assertions after it say what was expected)."""
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Left:
    """Work left behind by the three-partition deployment (each list's last id outside
    partition 0)."""

    dead: list[str]  # dead letters
    flaky: list[str]  # a retry waiting for each
    queued: list[str]  # in tenants' lanes of every partition
    later: list[str]  # scheduled sends due soon


async def leave_work(
    client: Client, auth: dict[str, str], three: Settings, redis: Redis, pool: asyncpg.Pool
) -> Left:
    """Run a three-partition worker until a dead letter and a waiting retry exist outside
    partition 0, stop it, then queue more, schedule one and leave one entry pending with a
    consumer that never acknowledges."""
    keys = QueueKeys(three.key_prefix, partitions=3)
    worker = await start(three, redis, pool)
    dead = await post_into_retiring(
        client, auth, lambda i: EXAMPLE | {"recipient": f"reject-{i}@example.com",
                                           "max_attempts": 1}, keys,
    )  # fmt: skip
    flaky = await post_into_retiring(
        client, auth, lambda i: EXAMPLE | {"recipient": f"flaky1-{i}@example.com"}, keys
    )
    for ident in dead:
        await wait_for_status(client, auth, f"/api/notifications/{ident}", "failed")
    await eventually(lambda: attempted(pool, flaky))
    await worker.shutdown()
    assert await retries_due_soon(redis, three.key_prefix) == len(flaky)
    queued = []
    for _ in range(30):
        response = await client.post("/api/notifications/", json=LOG, headers=auth)
        queued.append(msgspec.json.decode(await response.read())["id"])
    later = await post_into_retiring(client, auth, lambda i: LOG | {"delay_s": 2}, keys)
    tenants: Any = await redis.smembers(keys.part(2).tenants(2))
    lane = keys.part(2).tenant_stream(2, next(iter(tenants)).decode())
    ghost: Any = await redis.xreadgroup(CONSUMER_GROUP, "ghost", {lane: ">"}, count=1)
    assert len(entries_of(ghost)) == 1
    return Left(dead, flaky, queued, later)


async def attempted(pool: asyncpg.Pool, ids: list[str]) -> bool:
    tried = await pool.fetchval(
        "SELECT count(DISTINCT notification_id) FROM attempts"
        " WHERE notification_id = ANY($1::uuid[])",
        ids,
    )
    return bool(tried == len(ids))


async def deliveries(pool: asyncpg.Pool, ids: list[str]) -> dict[str, int]:
    """Delivered attempts per delivered notification among ``ids``."""
    rows = await pool.fetch(
        "SELECT a.notification_id::text AS id, count(*) AS n FROM attempts a"
        " JOIN notifications n ON n.id = a.notification_id AND n.status = 'delivered'"
        " WHERE a.notification_id = ANY($1::uuid[]) AND a.outcome = 'delivered'"
        " GROUP BY a.notification_id",
        ids,
    )
    return {row["id"]: row["n"] for row in rows}


async def dead_copies(redis: Redis, keys: QueueKeys) -> dict[str, bytes]:
    """Job id -> its entry in partition 0's dead-letter stream (one per job expected)."""
    entries: Any = await redis.xrange(keys.dead_letters())
    assert len({fields[b"job"] for _, fields in entries}) == len(entries)
    return {fields[b"job"].decode(): entry_id for entry_id, fields in entries}


async def test_lowering_from_three_partitions_to_one_delivers_everything_once(
    auth: dict[str, str],
    settings: Settings,
    smtp: ScriptedSmtp,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    # Given an API and a worker on three partitions, with work left in partitions 1 and 2
    base = msgspec.structs.replace(
        settings, smtp_port=smtp.port, worker_lease_ms=1000, worker_reclaim_interval_ms=100,
        retry_base_s=30, retry_cap_s=30,
    )  # fmt: skip
    async with api(msgspec.structs.replace(base, redis_partitions=3)) as client:
        left = await leave_work(
            client, auth, msgspec.structs.replace(base, redis_partitions=3), redis, pool
        )
    prefix, keys = settings.key_prefix, QueueKeys(settings.key_prefix)
    everything = [*left.queued, *left.flaky, *left.later]

    # When API and worker run with one partition
    one = msgspec.structs.replace(base, redis_partitions=1)
    async with api(one) as client:
        worker = await start(one, redis, pool)
        assert worker.worker.retirement is not None
        assert worker.worker.retirement.retiring == [1, 2]

        async def drained() -> bool:
            done = await deliveries(pool, everything)
            return len(done) == len(everything) and not await partition_keys_left(redis, prefix)

        await eventually(drained)

        # Then every notification was delivered exactly once
        assert await deliveries(pool, everything) == dict.fromkeys(everything, 1)
        outcomes = await pool.fetch(
            "SELECT outcome FROM attempts WHERE notification_id = $1 ORDER BY number",
            left.flaky[-1],
        )
        assert [row["outcome"] for row in outcomes] == ["retry", "delivered"]
        # no key of partitions 1 and 2 is left, and Redis remembers one partition
        assert await partition_keys_left(redis, prefix) == []
        assert await redis.get(keys.partition_count()) == b"1"
        assert worker.worker.retirement.retiring == []
        # the dead letters are still listed, their Redis copies in partition 0, and replayable
        response = await client.get("/api/dead-letters", headers=auth)
        listing = msgspec.json.decode(await response.read())
        assert {item["notification_id"] for item in listing["items"]} == set(left.dead)
        moved = await dead_copies(redis, keys)
        assert set(moved) == set(left.dead)
        retired = next(i for i in listing["items"] if i["notification_id"] == left.dead[-1])
        replay = await client.post(f"/api/dead-letters/{retired['id']}/replay", headers=auth)
        assert replay.status == 202

        async def died_again() -> bool:  # refused again: a dead letter of partition 0 again
            copies = await dead_copies(redis, keys)
            return copies.get(left.dead[-1], moved[left.dead[-1]]) != moved[left.dead[-1]]

        await eventually(died_again)
        again = await dead_copies(redis, keys)
        assert set(again) == set(left.dead)  # the moved copy went with the replay
        assert again[left.dead[-1]] != moved[left.dead[-1]]
        attempts = await pool.fetchval(
            "SELECT count(*) FROM attempts WHERE notification_id = $1", left.dead[-1]
        )
        assert attempts == 2
        assert await partition_keys_left(redis, prefix) == []
        await worker.shutdown()


async def test_a_fallback_step_leaves_a_retiring_partition_once(
    redis: Redis, settings: Settings
) -> None:
    # Given an entry read from partition 2, retiring for a worker configured with one partition
    keys = QueueKeys(settings.key_prefix, partitions=1).serving_up_to(3)
    old = QueueKeys(settings.key_prefix, partitions=3).part(2)
    job = log_job()
    stream = old.stream(job.priority)
    await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    fields: Any = encode_job(job)
    added: Any = await redis.xadd(stream, fields)
    entry_id = added.decode()
    await redis.hset(old.index(), job.id, f"{stream} {entry_id}")
    read: Any = await redis.xreadgroup(CONSUMER_GROUP, "w", {stream: ">"}, count=1)
    assert len(entries_of(read)) == 1
    following = msgspec.structs.replace(job, channel="email", recipient="ops@example.com")
    transitions = Transitions(redis, keys, "w", fair=True)
    moved = SettledBatch(fallbacks=[(EntryRef(stream, entry_id, job.id), following)])

    # When its next step is applied, twice (a batch applied again after a failure)
    for _ in range(2):
        (await transitions.apply(moved, int(time.time() * 1000))).raise_error()

    # Then the step waits once in partition 0, and partition 2 holds nothing of it
    home = keys.part(0)
    entries: Any = await redis.xrange(home.stream(job.priority))
    assert len(entries) == 1
    assert decode_job(entries[0][1]).channel == "email"
    indexed: Any = await redis.hget(home.index(), job.id)
    assert indexed.decode().startswith(home.stream(2))
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0
    assert await redis.hget(old.index(), job.id) is None
