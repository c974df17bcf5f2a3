"""Partitioned queue keys (PULSE_REDIS_PARTITIONS): names, spreading, and a drain across three
partitions of a plain Redis (the cluster itself: test_cluster.py)."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
from tests.conftest import Client, WorkerFactory, log_job

TAG = re.compile(r"^\{([^}]*)\}")


def tag_of(key: str) -> str:
    match = TAG.match(key)
    assert match is not None, key
    return match.group(1)


@pytest.mark.unit
def test_one_partition_keeps_every_key_it_had() -> None:
    keys = QueueKeys("pulse")
    assert keys.partition_keys() == [keys]
    assert keys.stream(2) == "{pulse}:stream:2"
    assert keys.index() == "{pulse}:index"
    assert keys.dead_letters() == "{pulse}:dead"
    assert keys.of_job(log_job()) is keys


@pytest.mark.unit
def test_each_partition_has_every_queue_key_under_its_own_tag() -> None:
    partitions = QueueKeys("pulse", partitions=3).partition_keys()
    for number, part in enumerate(partitions):
        queue_keys = [*part.all_keys()[:-4], part.dead_letters(), part.index(), part.wake()]
        assert {tag_of(key) for key in queue_keys} == {part.tag[1:-1]}
        assert part.partition == number
    assert [p.tag for p in partitions] == ["{pulse}", "{pulse#1}", "{pulse#2}"]


@pytest.mark.unit
def test_cross_partition_state_stays_under_the_home_tag() -> None:
    part = QueueKeys("pulse", partitions=4).part(3)
    shared = [
        part.workers(), part.workers_seen(), part.lock("reconciler"), part.job_cancels(),
        part.task_slots("resize"), part.rate_limit("tenant", "t"),
        part.provider_bucket("smtp"), part.recipient_window("t", "email", "abc"),
    ]  # fmt: skip
    assert {tag_of(key) for key in shared} == {"pulse"}


@pytest.mark.unit
def test_a_stream_names_its_partition() -> None:
    keys = QueueKeys("pulse.eu", partitions=5)
    for part in keys.partition_keys():
        for stream in [*part.streams(), *part.task_streams(), part.tenant_stream(1, "t#9")]:
            assert keys.of_key(stream) == part


@pytest.mark.unit
def test_jobs_spread_by_id_or_stay_together_by_tenant() -> None:
    by_id = QueueKeys("pulse", partitions=4)
    jobs = [log_job() for _ in range(200)]
    spread = {by_id.of_job(job).partition for job in jobs}
    assert spread == {0, 1, 2, 3}
    assert all(by_id.of_job(job) == by_id.of_job(job) for job in jobs)  # stable

    by_tenant = QueueKeys("pulse", partitions=4, by_tenant=True)
    assert len({by_tenant.of_job(job).partition for job in jobs}) == 1  # one tenant


@pytest.mark.unit
def test_a_partition_outside_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="partition 3"):
        QueueKeys("pulse", partition=3, partitions=3)


@pytest.mark.unit
def test_retiring_partitions_are_read_and_named_but_never_appended_to() -> None:
    keys = QueueKeys("pulse", partitions=1).serving_up_to(3)
    assert [p.tag for p in keys.partition_keys()] == ["{pulse}", "{pulse#1}", "{pulse#2}"]
    assert [p.partition for p in keys.retiring_keys()] == [1, 2]
    assert keys.of_key("{pulse#2}:stream:1:t:acme").partition == 2
    assert keys.of_key("{pulse#2}:stream:1:t:acme").retiring
    assert not keys.retiring
    jobs = [msgspec.structs.replace(log_job(), id=f"job-{i}") for i in range(50)]
    assert {keys.of_job(job).partition for job in jobs} == {0}
    spread = QueueKeys("pulse", partitions=2).serving_up_to(4)
    assert {spread.of_job(job).partition for job in jobs} == {0, 1}


@pytest.mark.integration
@pytest.mark.parametrize("fair", [False, True], ids=["shared", "tenant-fairness"])
async def test_an_api_spreads_and_a_worker_drains_every_partition(
    fair: bool,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    partitioned = msgspec.structs.replace(settings, redis_partitions=3, tenant_fairness=fair)
    keys = QueueKeys(settings.key_prefix, partitions=3)
    body = {"recipient": "ops", "channel": "log", "payload": {"message": "hi"}}
    app = create_app(partitioned, channel_specs(partitioned), Metrics())
    async with TestClient(TestServer(app)) as client:
        ids = []
        for _ in range(60):
            response = await client.post("/api/notifications/", json=body, headers=auth)
            document = msgspec.json.decode(await response.read())
            ids.append(document["id"])
        tenant = await pool.fetchval(
            "SELECT tenant_id::text FROM notifications WHERE id = $1", ids[0]
        )
        streams = [
            keys.part(p).tenant_stream(2, tenant) if fair else keys.part(p).stream(2)
            for p in range(3)
        ]  # with fairness, the tenant's sub-stream of each partition
        lengths = [await redis.xlen(stream) for stream in streams]
        assert sum(lengths) == len(ids)
        assert all(length > 0 for length in lengths)
        assert (await QueueStats(redis, keys).snapshot()).depth == len(ids)  # summed

        start_worker(partitioned)
        for _ in range(600):
            delivered = await pool.fetchval(
                "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[])"
                " AND status = 'delivered'",
                ids,
            )
            if delivered == len(ids):
                break
            await asyncio.sleep(0.05)
        assert delivered == len(ids)


@pytest.mark.integration
async def test_raising_the_count_keeps_what_waits_in_partition_0(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:
    """Accepted by a one-partition API, served by workers told of three partitions: what was
    queued before the change is in partition 0, which they read like the others."""
    body = {"recipient": "ops", "channel": "log", "payload": {"message": "hi"}}
    ids = []
    for _ in range(20):
        response = await client.post("/api/notifications/", json=body, headers=auth)
        ids.append(msgspec.json.decode(await response.read())["id"])

    start_worker(msgspec.structs.replace(settings, redis_partitions=3))
    for _ in range(600):
        delivered = await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[])"
            " AND status = 'delivered'",
            ids,
        )
        if delivered == len(ids):
            break
        await asyncio.sleep(0.05)
    assert delivered == len(ids)
