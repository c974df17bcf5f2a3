"""The acker batches by itself, with no timer: a result that comes to an idle acker is settled
alone, at once; the results that come while a batch is being settled go together in the next
(at most ``batch_size`` a statement). Each batch is one PostgreSQL transaction, which is what
the rows' ``xmin`` (the transaction that wrote them) shows."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from redis.asyncio import Redis

from bench.pulse_drain import enqueue_bulk
from pulse.config import Settings
from pulse.core.ports import Delivered
from pulse.core.retry import RetryPolicy
from pulse.core.timeutil import utcnow
from pulse.metrics import Metrics
from pulse.queue.consumer import Consumer
from pulse.queue.keys import QueueKeys
from pulse.queue.pending import PendingEntries
from pulse.queue.transitions import Transitions
from pulse.runtime.acker import Acker
from pulse.runtime.leaser import Leaser
from pulse.runtime.work import Delivery, Done, Try, received
from pulse.store.ledger import DeliveryLedger
from tests.queue_view import lanes

pytestmark = pytest.mark.integration

BATCH = 500
SETTLED_WITHIN_S = 30  # a bound for a stalled machine, not a speed asserted


async def _claimed(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, count: int
) -> list[Delivery]:
    """``count`` notifications committed, streamed, read and claimed, as the dispatcher leaves
    them for a deliverer."""
    keys = QueueKeys(settings.key_prefix)
    await enqueue_bulk(pool, redis, settings.key_prefix, count)
    streams = [stream for _, stream in await lanes(redis, keys)]
    consumer = Consumer(redis, keys, "acker-test", streams)
    await consumer.ensure_group()
    entries = await consumer.read(dict.fromkeys(streams, count))
    deliveries, _ = received(entries)
    await DeliveryLedger(pool).claim([d.job for d in deliveries], "acker-test", 30.0)
    return deliveries


def _acker(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> Acker:
    keys = QueueKeys(settings.key_prefix)
    ledger = DeliveryLedger(pool)
    return Acker(
        ledger,
        Transitions(redis, keys, "acker-test"),
        Leaser(PendingEntries(redis, keys, "acker-test"), ledger, 30_000),
        Metrics(),
        worker="acker-test",
        policy=RetryPolicy(base_s=1.0, cap_s=10.0),
        batch_size=BATCH,
    )


def _delivered(delivery: Delivery) -> Done:
    return Done.of(delivery, [Try("log", Delivered(provider_id="x"), utcnow(), 0.001)])


async def _transactions(pool: asyncpg.Pool, deliveries: list[Delivery]) -> int:
    """In how many transactions the notifications were settled, once all are delivered."""
    ids = [d.job.id for d in deliveries]
    query = "SELECT count(*) FILTER (WHERE status = 'delivered'), count(DISTINCT xmin::text)"
    query += " FROM notifications WHERE id = ANY($1::uuid[])"
    async with asyncio.timeout(SETTLED_WITHIN_S):
        while True:
            row = await pool.fetchrow(query, ids)
            assert row is not None
            if row[0] == len(ids):
                return int(row[1])
            await asyncio.sleep(0.05)


async def _run_with(acker: Acker, first: list[Done], rest: list[Done]) -> asyncio.Task[None]:
    """Start the acker, hand it ``first``, and ``rest`` once it has taken ``first`` in."""
    task = asyncio.create_task(acker.run())
    await asyncio.sleep(0)  # the acker waits for work
    for done in first:
        acker.submit(done)
    for _ in range(100):  # until the acker took them into a batch of their own
        if not acker.backlog:
            break
        await asyncio.sleep(0)
    assert acker.backlog == 0
    for done in rest:
        acker.submit(done)
    return task


async def test_results_that_come_during_a_batch_go_together_in_the_next(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given 100 claimed notifications and an idle acker
    deliveries = await _claimed(settings, pool, redis, 100)
    acker = _acker(settings, pool, redis)
    # When one result comes, and the other 99 while it is being settled
    task = await _run_with(acker, [_delivered(deliveries[0])], map_done(deliveries[1:]))
    # Then the first was settled alone, and the 99 together: two transactions
    try:
        assert await _transactions(pool, deliveries) == 2
    finally:
        task.cancel()


async def test_a_backlog_is_settled_a_batch_size_at_a_time(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given 1,201 claimed notifications and an idle acker
    deliveries = await _claimed(settings, pool, redis, 1 + 2 * BATCH + 200)
    acker = _acker(settings, pool, redis)
    # When one result comes, and 1,200 while it is being settled
    task = await _run_with(acker, [_delivered(deliveries[0])], map_done(deliveries[1:]))
    # Then the 1,200 go in batches of at most 500, one after another: 1 + 3 transactions
    try:
        assert await _transactions(pool, deliveries) == 4
    finally:
        task.cancel()


def map_done(deliveries: list[Delivery]) -> list[Done]:
    return [_delivered(delivery) for delivery in deliveries]
