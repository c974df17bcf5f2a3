"""Tenants' sub-streams in real Redis: the set of active tenants follows appends and
retirement exactly, and entries are read, acknowledged and retried per sub-stream."""

from __future__ import annotations

import msgspec
import pytest
from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.consumer import Consumer
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
from pulse.queue.tenant_streams import TenantStreams
from pulse.queue.transitions import EntryRef, SettledBatch, Transitions
from tests.conftest import log_job

pytestmark = pytest.mark.integration


def job_of(tenant: str, priority: int = 2) -> Job:
    return msgspec.structs.replace(log_job(priority), tenant_id=tenant)


async def ack(redis: Redis, keys: QueueKeys, entry: EntryRef) -> None:
    applied = await Transitions(redis, keys, "c1").apply(SettledBatch(acks=[entry]), 0)
    applied.raise_error()


async def test_an_append_makes_its_tenant_active_with_a_readable_sub_stream(
    redis: Redis, keys: QueueKeys
) -> None:
    streams = TenantStreams(redis, keys)
    a, b = job_of("a"), job_of("b", priority=0)
    await streams.append([a, b])
    assert await streams.active() == {0: ["b"], 1: [], 2: ["a"], 3: [], 4: []}
    consumer = Consumer(redis, keys, "c1", streams.streams_of(await streams.active()))
    entries = await consumer.read({keys.tenant_stream(2, "a"): 10, keys.tenant_stream(0, "b"): 10})
    assert sorted(e.job_id for e in entries) == sorted([a.id, b.id])
    assert {e.stream for e in entries} == {keys.tenant_stream(2, "a"), keys.tenant_stream(0, "b")}


async def test_a_sub_stream_with_work_is_never_retired(redis: Redis, keys: QueueKeys) -> None:
    streams = TenantStreams(redis, keys)
    job = job_of("a")
    await streams.append([job])
    consumer = Consumer(redis, keys, "c1", [keys.tenant_stream(2, "a")])
    assert await streams.retire(2, ["a"]) == []  # waiting
    entries = await consumer.read({keys.tenant_stream(2, "a"): 1})
    assert await streams.retire(2, ["a"]) == []  # in flight
    await ack(redis, keys, EntryRef(entries[0].stream, entries[0].entry_id, job.id))
    assert await streams.retire(2, ["a"]) == ["a"]
    assert await streams.active() == {p: [] for p in range(5)}
    assert await redis.exists(keys.tenant_stream(2, "a")) == 0


async def test_an_append_after_retirement_is_delivered(redis: Redis, keys: QueueKeys) -> None:
    streams = TenantStreams(redis, keys)
    await streams.append([job_of("a")])
    stream = keys.tenant_stream(2, "a")
    consumer = Consumer(redis, keys, "c1", [stream])
    first = await consumer.read({stream: 1})
    await ack(redis, keys, EntryRef(stream, first[0].entry_id, first[0].job_id))
    assert await streams.retire(2, ["a"]) == ["a"]
    again = job_of("a")
    await streams.append([again])
    assert [e.job_id for e in await consumer.read({stream: 5})] == [again.id]


async def test_queue_stats_count_the_tenants_sub_streams_in_their_priority(
    redis: Redis, keys: QueueKeys
) -> None:
    streams = TenantStreams(redis, keys)
    await streams.append([job_of("a"), job_of("a"), job_of("b"), job_of("b", priority=4)])
    snapshot = await QueueStats(redis, keys, max_age_s=0).snapshot()
    depths = {state.priority: state.depth for state in snapshot.streams}
    assert depths == {0: 0, 1: 0, 2: 3, 3: 0, 4: 1}
    assert snapshot.streams[2].lag == 3
    assert snapshot.streams[2].oldest_age_s is not None
