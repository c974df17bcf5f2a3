"""The queue snapshot an operator (and the dashboard) reads: depth, lag, pending, ages, retries,
dead letters and live workers, from a real Redis the way the worker leaves it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from redis.asyncio import Redis

from pulse.core.timeutil import now_ms
from pulse.queue.consumer import Consumer
from pulse.queue.heartbeat import FORGET_AFTER_MS, LIVE_AFTER_MS, Heartbeats, WorkerBeat
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.queue.stats import MAX_TENANT_STREAMS, QueueStats
from pulse.queue.transitions import EntryRef, SettledBatch, Transitions
from tests.conftest import log_job

pytestmark = pytest.mark.integration


def _beat(name: str, seen_at_ms: int) -> WorkerBeat:
    return WorkerBeat(
        name=name,
        host="h",
        pid=1,
        started_at_ms=seen_at_ms,
        seen_at_ms=seen_at_ms,
        channels=["log"],
        in_flight=2,
        settling=0,
    )


async def test_a_queue_nobody_ever_used_reads_as_empty(redis: Redis, keys: QueueKeys) -> None:
    snapshot = await QueueStats(redis, keys).snapshot()

    assert [s.priority for s in snapshot.streams] == [0, 1, 2, 3, 4]
    assert snapshot.depth == 0
    assert all(s.oldest_age_s is None and s.consumers == 0 for s in snapshot.streams)
    assert snapshot.dead_letters == 0
    assert snapshot.workers == []


async def test_snapshot_shows_unread_pending_retrying_and_dead_entries(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given five jobs on priority 1 and one on priority 3, a worker that has read three of
    # priority 1, scheduled one for retry in a minute and dead-lettered another
    publisher = Publisher(redis, keys)
    await publisher.publish([log_job(1) for _ in range(5)] + [log_job(3)])
    consumer = Consumer(redis, keys, "w1")
    await consumer.ensure_group()
    taken = await consumer.read({keys.stream(1): 3})
    retry, dead = (EntryRef(e.stream, e.entry_id, e.job_id) for e in taken[:2])
    batch = SettledBatch(retries=[(retry, now_ms() + 60_000, True)], dead=[(dead, "permanent")])
    (await Transitions(redis, keys, "w1").apply(batch, now_ms())).raise_error()
    await asyncio.sleep(0.02)

    # When an operator reads the snapshot
    snapshot = await QueueStats(redis, keys).snapshot()

    # Then priority 1 holds four entries: two unread, two pending (one waiting for its retry)
    high = snapshot.streams[1]
    assert high.depth == 4
    assert high.lag == 2
    assert high.pending == 2
    assert high.retry_waiting == 1
    assert high.next_retry_in_s is not None
    assert 50 < high.next_retry_in_s <= 60
    assert high.oldest_age_s is not None
    assert high.oldest_pending_age_s is not None
    assert high.oldest_age_s >= high.oldest_pending_age_s > 0
    assert high.consumers == 1
    assert snapshot.streams[3].depth == 1
    assert snapshot.streams[3].lag == 1
    assert snapshot.streams[3].pending == 0
    assert snapshot.streams[3].oldest_pending_age_s is None
    assert snapshot.dead_letters == 1
    assert snapshot.depth == 5


async def test_snapshot_is_shared_for_a_second_then_read_again(
    redis: Redis, keys: QueueKeys
) -> None:
    now = [0.0]
    stats = QueueStats(redis, keys, clock=lambda: now[0])
    first = await stats.snapshot()
    await Publisher(redis, keys).publish([log_job(2)])

    cached = await stats.snapshot()
    now[0] = 1.0
    fresh = await stats.snapshot()

    assert cached is first
    assert cached.depth == 0
    assert fresh.depth == 1
    assert stats.latest is fresh


async def test_live_workers_are_the_recent_heartbeats_and_leavers_go_at_once(
    redis: Redis, keys: QueueKeys
) -> None:
    beats = Heartbeats(redis, keys)
    now = now_ms()
    await beats.beat(_beat("alive", now))
    await beats.beat(_beat("leaving", now))
    await beats.beat(_beat("silent", now - LIVE_AFTER_MS - 1_000))
    await beats.leave("leaving", now)

    snapshot = await QueueStats(redis, keys).snapshot()

    assert [w.name for w in snapshot.workers] == ["alive"]
    assert snapshot.workers[0].in_flight == 2
    assert snapshot.workers[0].channels == ["log"]
    assert await redis.hexists(keys.workers(), "silent")  # dead, not yet forgotten


async def test_a_worker_silent_for_long_is_forgotten_by_the_next_heartbeat(
    redis: Redis, keys: QueueKeys
) -> None:
    beats = Heartbeats(redis, keys)
    now = now_ms()
    await beats.beat(_beat("gone", now - FORGET_AFTER_MS - 1_000))

    await beats.beat(_beat("alive", now))

    assert await redis.hkeys(keys.workers()) == [b"alive"]
    assert await redis.zrange(keys.workers_seen(), 0, -1) == [b"alive"]


async def test_silent_workers_are_listed_apart_until_they_would_be_forgotten(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a worker that stopped beating a minute ago and one silent for longer than the
    # forgetting delay (still in Redis: no other worker has beaten since)
    beats = Heartbeats(redis, keys)
    now = now_ms()
    await beats.beat(_beat("long-gone", now - FORGET_AFTER_MS - 10_000))
    await beats.beat(_beat("crashed", now - 60_000))

    # When an operator reads the snapshot
    snapshot = await QueueStats(redis, keys).snapshot()

    # Then the crashed worker is silent, not live, and the long-gone one is neither
    assert snapshot.workers == []
    assert [w.name for w in snapshot.silent_workers] == ["crashed"]
    assert await redis.hexists(keys.workers(), "long-gone")


async def test_every_tenants_lane_counts_in_depth_past_the_full_read_bound(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given more tenants with work at priority 0 than a snapshot reads in full, and one at 4
    flood = [
        msgspec.structs.replace(log_job(0), tenant_id=f"tenant-{i:05}")
        for i in range(MAX_TENANT_STREAMS + 300)
    ]
    publisher = Publisher(redis, keys, fair=True)
    for start in range(0, len(flood), 500):
        await publisher.publish(flood[start : start + 500])
    await publisher.publish([msgspec.structs.replace(log_job(4), tenant_id="late")])

    # When an operator reads the snapshot
    snapshot = await QueueStats(redis, keys).snapshot()

    # Then each priority's depth counts every lane
    depths = {s.priority: s.depth for s in snapshot.streams}
    assert depths == {0: MAX_TENANT_STREAMS + 300, 1: 0, 2: 0, 3: 0, 4: 1}
