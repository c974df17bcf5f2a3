"""Acknowledged entries leave Redis: draining 100,000 notifications gives the memory back."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from bench.pulse_drain import enqueue_bulk
from pulse.config import Settings
from pulse.queue.keys import QueueKeys
from tests.conftest import WorkerFactory

pytestmark = pytest.mark.system

COUNT = 100_000


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def test_draining_100k_notifications_returns_redis_memory(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    # Given 100,000 committed and streamed notifications
    keys = QueueKeys(settings.key_prefix)
    before = await used_memory(redis)
    await enqueue_bulk(pool, redis, settings.key_prefix, COUNT)
    loaded = await used_memory(redis)

    # When a worker drains them
    start_worker(msgspec.structs.replace(settings, log_level="WARNING"))
    for _ in range(6000):
        if await redis.hlen(keys.index()) == 0:  # every one acknowledged, whichever lane
            break
        await asyncio.sleep(0.05)
    after = await used_memory(redis)

    # Then every one is delivered and Redis is back near where it started
    delivered = await pool.fetchval(
        "SELECT count(*) FROM notifications n JOIN tenants t ON t.id = n.tenant_id"
        " WHERE t.name = $1 AND n.status = 'delivered'",
        f"bench-{settings.key_prefix}",
    )
    print(
        f"\nredis used_memory: {before / 1e6:.1f} MB before, {loaded / 1e6:.1f} MB with"
        f" {COUNT:,} queued, {after / 1e6:.1f} MB after draining"
    )
    assert delivered == COUNT
    assert loaded - before > 10_000_000  # the backlog really occupied Redis
    assert after - before < 2_000_000, (before, loaded, after)
