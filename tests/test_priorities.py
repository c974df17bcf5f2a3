"""Priorities without starvation, measured on a live worker (log channel, real servers).

Figures are printed for docs/reliability.md; the assertions hold them to the promise:
a critical notification waits at most about one fetch batch behind a bulk flood, and bulk
keeps roughly its weighted share (1/17 against critical) under a critical flood.
"""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from bench.pulse_drain import enqueue_bulk
from pulse.config import Settings
from tests.conftest import WorkerFactory

pytestmark = pytest.mark.system

FLOOD = 20_000


def quiet(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, log_level="WARNING")


async def wait_all(pool: asyncpg.Pool, ids: list[str]) -> None:
    for _ in range(6000):
        done = await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[])"
            " AND status = 'delivered'",
            ids,
        )
        if done == len(ids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not all delivered")


async def test_critical_waits_at_most_a_batch_behind_a_bulk_flood(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given a worker busy with a flood of bulk notifications
    bulk = await enqueue_bulk(pool, redis, settings.key_prefix, FLOOD, priority=4)
    start_worker(quiet(settings))
    await wait_all(pool, bulk[:2000])

    # When one critical notification arrives (measured from the moment it is in its stream)
    [critical] = await enqueue_bulk(pool, redis, settings.key_prefix, 1, priority=0)
    streamed_at = await pool.fetchval("SELECT clock_timestamp()")
    await wait_all(pool, [critical])

    # Then it was fetched within a round: at most one fetch batch of bulk (plus the round in
    # progress) was claimed between its arrival and its own claim
    row = await pool.fetchrow(
        "SELECT n.created_at, n.delivered_at, a.at AS claimed_at FROM notifications n"
        " JOIN audit a ON a.notification_id = n.id AND a.status = 'delivering' WHERE n.id = $1",
        critical,
    )
    assert row is not None
    overtaken = await pool.fetchval(
        "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])"
        " AND status = 'delivering' AND at > $2 AND at < $3",
        bulk,
        streamed_at,
        row["claimed_at"],
    )
    remaining = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[]) AND status <> 'delivered'",
        bulk,
    )
    delay_ms = (row["delivered_at"] - row["created_at"]).total_seconds() * 1000
    print(
        f"\ncritical under bulk flood: delivered {delay_ms:.1f} ms after its commit; {overtaken}"
        f" bulk claimed before it; {remaining} bulk still queued"
    )
    assert remaining > 0  # the flood was still going on
    assert overtaken <= 2 * settings.worker_batch_size


async def test_bulk_keeps_its_share_under_a_critical_flood(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given equal floods of critical and bulk work
    critical = await enqueue_bulk(pool, redis, settings.key_prefix, FLOOD, priority=0)
    bulk = await enqueue_bulk(pool, redis, settings.key_prefix, FLOOD, priority=4)

    # When a worker drains the first half of it
    start_worker(quiet(settings))
    await wait_all(pool, critical[: FLOOD // 2])

    # Then bulk got about its weighted share meanwhile (weights 16:1 -> 1/17)
    first = await pool.fetch(
        "SELECT n.priority FROM audit a JOIN notifications n ON n.id = a.notification_id"
        " WHERE a.notification_id = ANY($1::uuid[]) AND a.status = 'delivered'"
        " ORDER BY a.id LIMIT $2",
        critical + bulk,
        FLOOD // 2,
    )
    share = sum(1 for r in first if r["priority"] == 4) / len(first)
    print(f"\nbulk share under critical flood: {share:.3f} (weights give {1 / 17:.3f})")
    assert 0.5 / 17 <= share <= 2.0 / 17
