"""How fast one Pulse worker drains N queued notifications on the log channel, state persisted.

Setup (untimed): a fresh database, N notifications committed with their ``queued`` audit rows
and appended to their stream, exactly as the API leaves them. Timed: from the worker's start
until every notification is ``delivered`` in PostgreSQL and acknowledged in Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import asyncpg
import msgspec
from redis.asyncio import Redis

from pulse.channels.log import LogChannel
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.metrics import Metrics
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.publisher import Publisher
from pulse.runtime.worker import build_worker
from pulse.store.migrations import migrate_database
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore, generate_key

CHUNK = 1000
POLL_S = 0.02
POLL_LIMIT = 30_000  # ten minutes at most


@dataclass(frozen=True)
class DrainResult:
    jobs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def drain(redis_url: str, database_url: str, jobs: int, settings: Settings) -> DrainResult:
    """``database_url`` must name a fresh database; the caller creates and drops it."""
    await migrate_database(database_url)
    prefix = f"bench{secrets.token_hex(3)}"
    settings = msgspec.structs.replace(
        settings, redis_url=redis_url, database_url=database_url, key_prefix=prefix
    )
    pool = await create_pool(database_url, 2, settings.db_pool_max)
    redis: Redis = Redis.from_url(redis_url)
    try:
        await enqueue_bulk(pool, redis, prefix, jobs)
        result = await _timed_drain(settings, pool, redis, jobs)
        await _verify_audit(pool, jobs)
        return result
    finally:
        await redis.delete(*QueueKeys(prefix).all_keys())
        await redis.aclose()
        await pool.close()


async def enqueue_bulk(
    pool: asyncpg.Pool, redis: Redis, prefix: str, count: int, priority: int = 2
) -> list[str]:
    """Commit ``count`` log-channel notifications and stream them, as the API would; return
    their ids. They belong to the tenant ``bench-<prefix>``."""
    tenant_id = await TenantStore(pool).ensure(f"bench-{prefix}", generate_key())
    ids: list[str] = []
    publisher = Publisher(redis, QueueKeys(prefix))
    payload = {"message": "benchmark"}
    for start in range(0, count, CHUNK):
        batch = [
            Job(
                id=str(uuid7()),
                tenant_id=tenant_id,
                kind=JobKind.NOTIFICATION,
                channel="log",
                recipient="bench",
                payload=payload,
                priority=priority,
                max_attempts=5,
            )
            for _ in range(min(CHUNK, count - start))
        ]
        await _commit(pool, batch)
        await publisher.publish(batch)
        ids += [job.id for job in batch]
    return ids


async def _commit(pool: asyncpg.Pool, batch: list[Job]) -> None:
    ids = [job.id for job in batch]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
            " status, max_attempts) SELECT id, $2, 'log', 'bench', $3::jsonb, $4, 'queued', 5"
            " FROM unnest($1::uuid[]) AS id",
            ids,
            batch[0].tenant_id,
            msgspec.json.encode(batch[0].payload).decode(),
            batch[0].priority,
        )
        await conn.execute(
            "INSERT INTO audit (notification_id, status) SELECT id, 'queued'"
            " FROM unnest($1::uuid[]) AS id",
            ids,
        )


async def _timed_drain(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, jobs: int
) -> DrainResult:
    metrics = Metrics()
    worker = build_worker(settings, redis, pool, {"log": {"log": LogChannel(quiet=True)}}, metrics)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    stream = QueueKeys(settings.key_prefix).stream(2)
    await _wait_drained(pool, redis, stream, jobs)
    seconds = time.perf_counter() - started
    stop.set()
    await task
    return DrainResult(jobs=jobs, seconds=seconds)


async def _verify_audit(pool: asyncpg.Pool, jobs: int) -> None:
    """The figure counts only if every notification has its whole history persisted."""
    rows = await pool.fetch("SELECT status, count(*) AS n FROM audit GROUP BY status")
    counts = {row["status"]: row["n"] for row in rows}
    expected = {"queued": jobs, "delivering": jobs, "delivered": jobs}
    if counts != expected:
        raise RuntimeError(f"audit rows {counts} differ from {expected}")


async def _wait_drained(pool: asyncpg.Pool, redis: Redis, stream: str, jobs: int) -> None:
    for _ in range(POLL_LIMIT):
        if await _drained(pool, redis, stream, jobs):
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError("the worker did not drain the queue within the bench's time bound")


async def _drained(pool: asyncpg.Pool, redis: Redis, stream: str, jobs: int) -> bool:
    delivered = await pool.fetchval("SELECT count(*) FROM notifications WHERE status = 'delivered'")
    if delivered < jobs:
        return False
    pending = await redis.xpending(stream, CONSUMER_GROUP)
    return int(pending["pending"]) == 0 and await redis.xlen(stream) == 0
