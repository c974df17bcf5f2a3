"""Fairness between tenants inside a priority, on a live worker (PULSE_TENANT_FAIRNESS on):
a small tenant's notifications are not queued behind another tenant's backlog."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from bench.fairness import delivered, enqueue_for
from pulse.config import Settings
from pulse.queue.consumer import Consumer
from pulse.queue.keys import QueueKeys
from pulse.queue.tenant_streams import TenantStreams
from tests.conftest import WorkerFactory

pytestmark = pytest.mark.system

BACKLOG = 4_000
SMALL = 20


async def wait_delivered(pool: asyncpg.Pool, ids: list[str], count: int) -> None:
    for _ in range(6000):
        if await delivered(pool, ids) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not delivered")


async def test_a_small_tenant_is_served_among_the_next_rounds_not_after_the_backlog(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    fair = msgspec.structs.replace(settings, tenant_fairness=True, log_level="WARNING")
    prefix = settings.key_prefix
    # Given tenant A's backlog at priority 2, being drained by a fair worker
    backlog = await enqueue_for(pool, redis, prefix, f"a-{prefix}", BACKLOG)
    start_worker(fair)
    await wait_delivered(pool, backlog, 300)

    # When tenant B sends a few at the same priority
    small = await enqueue_for(pool, redis, prefix, f"b-{prefix}", SMALL)
    streamed_at = await pool.fetchval("SELECT clock_timestamp()")  # all of B's are in Redis
    await wait_delivered(pool, small, SMALL)

    # Then all of B's were claimed within two fetch rounds of A's (the round in progress, and
    # A's share of the next), while most of A's backlog was still waiting
    last_b_claim = await pool.fetchval(
        "SELECT max(at) FROM audit WHERE notification_id = ANY($1::uuid[])"
        " AND status = 'delivering'",
        small,
    )
    a_claimed_meanwhile = await pool.fetchval(
        "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])"
        " AND status = 'delivering' AND at > $2 AND at < $3",
        backlog,
        streamed_at,
        last_b_claim,
    )
    a_claimed_before = await pool.fetchval(
        "SELECT count(DISTINCT notification_id) FROM audit WHERE"
        " notification_id = ANY($1::uuid[]) AND status = 'delivering' AND at <= $2",
        backlog,
        last_b_claim,
    )
    a_waiting = BACKLOG - a_claimed_before
    print(f"\nB's {SMALL} claimed after {a_claimed_meanwhile} of A's; {a_waiting} of A's waiting")
    assert a_claimed_meanwhile <= 2 * fair.worker_batch_size
    assert a_waiting > BACKLOG // 2  # B did not wait for A's backlog
    await wait_delivered(pool, backlog, BACKLOG)  # and A's backlog is delivered in full


async def test_an_entry_a_dead_worker_left_in_a_sub_stream_comes_back_after_the_lease(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    fair = msgspec.structs.replace(
        settings, tenant_fairness=True, worker_lease_ms=500, log_level="WARNING"
    )
    keys = QueueKeys(settings.key_prefix)
    # Given a tenant's notification read from its sub-stream by a worker that then died
    [lost] = await enqueue_for(pool, redis, settings.key_prefix, f"a-{keys.prefix}", 1)
    streams = TenantStreams(redis, keys)
    active = await streams.active()
    Consumer(redis, keys, "crashed-worker", [])  # reads replies as the workers do
    entries, _ = await streams.read("crashed-worker", dict.fromkeys(streams.streams_of(active), 5))
    assert [entry.job_id for entry in entries] == [lost]

    # When a fair worker with a 500 ms lease runs
    start_worker(fair)

    # Then it takes the entry back from the sub-stream and delivers it
    await wait_delivered(pool, [lost], 1)
