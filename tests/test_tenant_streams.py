"""Tenants' sub-streams in real Redis: the set of active tenants follows appends and
retirement exactly, and entries are read, acknowledged and retried per sub-stream."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.consumer import Consumer
from pulse.queue.keys import QueueKeys
from pulse.queue.pending import PendingEntries
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


async def test_a_wait_on_a_sub_stream_retired_meanwhile_ends_empty(
    redis: Redis, keys: QueueKeys, redis_url: str
) -> None:
    streams = TenantStreams(redis, keys)
    job = job_of("a")
    await streams.append([job])
    stream = keys.tenant_stream(2, "a")
    consumer = Consumer(redis, keys, "c1", [stream])
    [entry] = await consumer.read({stream: 1})
    await ack(redis, keys, EntryRef(stream, entry.entry_id, job.id))
    other = Redis.from_url(redis_url)
    try:
        waiting = asyncio.ensure_future(streams.wait("c1", [stream], 10, 5_000))
        await asyncio.sleep(0.2)  # blocked on the sub-stream
        assert await TenantStreams(other, keys).retire(2, ["a"]) == ["a"]
        assert await waiting == []
    finally:
        await other.aclose()


async def test_a_wait_on_a_sub_stream_retired_just_before_ends_empty(
    redis: Redis, keys: QueueKeys
) -> None:
    """The fetcher read the sets, another worker retired a sub-stream, then the wait began:
    Redis answers NOGROUP, which is an empty wait, not a crash of the fetcher."""
    streams = TenantStreams(redis, keys)
    job = job_of("a")
    await streams.append([job])
    stream = keys.tenant_stream(2, "a")
    [entry] = await Consumer(redis, keys, "c1", [stream]).read({stream: 1})
    await ack(redis, keys, EntryRef(stream, entry.entry_id, job.id))
    assert await streams.retire(2, ["a"]) == ["a"]

    assert await streams.wait("c1", [stream], 10, 100) == []


async def test_a_retry_is_reclaimed_from_its_sub_stream_and_the_reclaimer_lists_it(
    redis: Redis, keys: QueueKeys
) -> None:
    streams = TenantStreams(redis, keys)
    job = job_of("a")
    await streams.append([job])
    stream = keys.tenant_stream(2, "a")
    [entry] = await Consumer(redis, keys, "c1", [stream]).read({stream: 1})
    retry = SettledBatch(retries=[(EntryRef(stream, entry.entry_id, job.id), 1_000, True)])
    (await Transitions(redis, keys, "c1").apply(retry, 0)).raise_error()
    assert await streams.retire(2, ["a"]) == []  # a retry is still work of the sub-stream
    assert streams.streams_of(await streams.active()) == [stream]
    [again] = await PendingEntries(redis, keys, "c2").reclaim(stream, 2_000, 30_000, 10)
    assert (again.job_id, again.attempt) == (job.id, 2)


async def test_a_read_answers_the_lanes_asked_and_names_a_lane_retired_meanwhile(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given tenants a (two notifications) and b (one) with work at priority 2, and c's
    # sub-stream gone (retired since the fetcher's sets named it)
    streams = TenantStreams(redis, keys)
    a1, a2, b = job_of("a"), job_of("a"), job_of("b")
    await streams.append([a1, a2, b])
    lane_a, lane_b, lane_c = (keys.tenant_stream(2, t) for t in "abc")
    Consumer(redis, keys, "c1", [lane_a, lane_b])  # the fetcher's client reads replies as sent
    # When a read asks one entry of a, five of b and five of c
    entries, missing = await streams.read("c1", {lane_a: 1, lane_b: 5, lane_c: 5})
    # Then it answers a's first and b's, and says a lane had no group
    assert [(e.stream, e.job_id) for e in entries] == [(lane_a, a1.id), (lane_b, b.id)]
    assert missing


async def test_retiring_at_every_priority_at_once_drops_only_the_empty_sub_streams(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given tenant a's sub-streams at priorities 0 and 2 emptied, and b's at 2 still waiting
    streams = TenantStreams(redis, keys)
    done = [job_of("a", priority=0), job_of("a", priority=2)]
    await streams.append([*done, job_of("b", priority=2)])
    lanes = [keys.tenant_stream(0, "a"), keys.tenant_stream(2, "a")]
    consumer = Consumer(redis, keys, "c1", lanes)
    for entry in await consumer.read(dict.fromkeys(lanes, 1)):
        await ack(redis, keys, EntryRef(entry.stream, entry.entry_id, entry.job_id))
    # When the fetcher retires what read empty at both priorities (and nothing at 4)
    retired = await streams.retire_each({0: ["a"], 2: ["a", "b"], 4: []})
    # Then a's sub-streams are gone at both, and b's, with work, stays
    assert retired == {0: ["a"], 2: ["a"]}
    assert await streams.active() == {0: [], 1: [], 2: ["b"], 3: [], 4: []}
