"""How fast one Pulse worker drains N queued notifications on the log channel, state persisted.

Setup (untimed): a fresh database, N notifications committed with their ``queued`` audit rows
and appended to their stream, exactly as the API leaves them, and a worker process connected.
Timed: from the worker's start until every notification is acknowledged in Redis (so
``delivered`` in PostgreSQL, checked afterwards with its whole audit history).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
import msgspec
from redis.asyncio import Redis

from bench.processes import pulse_worker
from bench.scope import fresh_scope
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.publisher import Publisher
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore, generate_key

CHUNK = 1000
POLL_S = 0.005
POLL_LIMIT = 120_000  # ten minutes at most


@dataclass(frozen=True)
class DrainResult:
    """``cpu_s``: the worker process's CPU time (user + system) during the drain, a figure
    that holds when other processes load the machine (the wall-clock rate does not)."""

    jobs: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def cpu_us_per_job(self) -> float:
        return self.cpu_s / self.jobs * 1e6


async def drain(redis_url: str, admin_url: str, jobs: int) -> DrainResult:
    """Queue ``jobs`` notifications in a fresh scope, then time one worker process on them."""
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis: Redis = Redis.from_url(redis_url)
        try:
            await enqueue_bulk(pool, redis, scope.prefix, jobs)
            with pulse_worker(scope) as go:
                cpu_before = go.cpu_s()
                started = go()
                await wait_acknowledged(redis, QueueKeys(scope.prefix))
                seconds = time.perf_counter() - started
                cpu_s = go.cpu_s() - cpu_before
            await _verify_audit(pool, jobs)
            return DrainResult(jobs=jobs, seconds=seconds, cpu_s=cpu_s)
        finally:
            await redis.aclose()
            await pool.close()


async def enqueue_bulk(
    pool: asyncpg.Pool,
    redis: Redis,
    prefix: str,
    count: int,
    priority: int = 2,
    partitions: int = 1,
) -> list[str]:
    """Commit ``count`` log-channel notifications and stream them, as the API would (to their
    tenant's sub-stream, PULSE_TENANT_FAIRNESS's default, spread over ``partitions``); return
    their ids. They belong to the tenant ``bench-<prefix>``."""
    tenant_id = await TenantStore(pool).ensure(f"bench-{prefix}", generate_key())
    ids: list[str] = []
    publisher = Publisher(redis, QueueKeys(prefix, partitions=partitions), fair=True)
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


async def _verify_audit(pool: asyncpg.Pool, jobs: int) -> None:
    """The figure counts only if every notification has its whole history persisted."""
    rows = await pool.fetch("SELECT status, count(*) AS n FROM audit GROUP BY status")
    counts = {row["status"]: row["n"] for row in rows}
    expected = {"queued": jobs, "delivering": jobs, "delivered": jobs}
    if counts != expected:
        raise RuntimeError(f"audit rows {counts} differ from {expected}")


async def wait_drained(redis: Redis, stream: str) -> None:
    """Until the stream is empty and nothing is pending. Redis alone is asked (cheap, and
    PostgreSQL is not disturbed): the worker acknowledges only what PostgreSQL committed."""
    for _ in range(POLL_LIMIT):
        if await redis.xlen(stream) == 0:  # the worker acknowledged (and deleted) every entry
            pending = await redis.xpending(stream, CONSUMER_GROUP)
            if int(pending["pending"]) == 0:
                return
        await asyncio.sleep(POLL_S)
    raise RuntimeError("the worker did not drain the queue within the bench's time bound")


async def wait_acknowledged(redis: Redis, keys: QueueKeys) -> None:
    """Until every notification is acknowledged, whichever lane held it (a priority stream or
    a tenant's sub-stream): ack.lua removes a job from the index as it deletes its entry."""
    for _ in range(POLL_LIMIT):
        if await redis.hlen(keys.index()) == 0:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError("the worker did not drain the queue within the bench's time bound")
