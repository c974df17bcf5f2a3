"""Redis memory (INFO memory ``used_memory``) before, with N pending notifications (committed
and streamed as the API leaves them), and after one worker process drained them."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bench.processes import pulse_worker
from bench.pulse_drain import enqueue_bulk, wait_acknowledged
from bench.scope import fresh_scope
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def pulse_memory(redis_url: str, admin_url: str, pending: int) -> dict[str, Any]:
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis: Redis = Redis.from_url(redis_url)
        try:
            before = await used_memory(redis)
            await enqueue_bulk(pool, redis, scope.prefix, pending)
            loaded = await used_memory(redis)
            with pulse_worker(scope) as go:
                go()
                await wait_acknowledged(redis, QueueKeys(scope.prefix))
            after = await used_memory(redis)
        finally:
            await redis.aclose()
            await pool.close()
    return {
        "pending": pending, "before": before, "with_pending": loaded, "after_drain": after,
        "bytes_per_pending": (loaded - before) / pending,
    }  # fmt: skip
