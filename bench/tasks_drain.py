"""How fast one Pulse worker drains N queued no-op tasks, results kept (or off).

``python -m bench.tasks_drain [N] [off]``. Setup (untimed): a fresh database, N task jobs committed
with their ``queued`` audit rows and appended to the task stream, as the API leaves them, and a
worker process serving ``bench.noop_tasks`` connected. Timed: from the worker's start until
every entry is acknowledged (so each job ``succeeded`` with its result row, checked after).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import asyncpg
import msgspec
from redis.asyncio import Redis

from bench.processes import pulse_worker
from bench.pulse_drain import DrainResult, wait_drained
from bench.scope import fresh_scope
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind, task_channel
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore, generate_key

CHUNK = 1000
TASK = "bench.noop"
TASK_OFF = "bench.noop_off"  # keep_result_s=0: results off
TUNING = {k: v for k, v in os.environ.items() if k == "PULSE_TASK_CONCURRENCY"}
ARGS = msgspec.json.encode({"args": {}}).decode()


async def drain_tasks(
    redis_url: str, admin_url: str, jobs: int, *, results: bool = True
) -> DrainResult:
    task = TASK if results else TASK_OFF
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 2)
        redis: Redis = Redis.from_url(redis_url)
        try:
            await enqueue_tasks(pool, redis, scope.prefix, jobs, task)
            with pulse_worker(scope, {"PULSE_TASKS": "bench.noop_tasks", **TUNING}) as go:
                cpu_before = go.cpu_s()
                started = go()
                await wait_drained(redis, QueueKeys(scope.prefix).task_stream(2))
                seconds = time.perf_counter() - started
                cpu_s = go.cpu_s() - cpu_before
            await _verify(pool, jobs, results)
            return DrainResult(jobs=jobs, seconds=seconds, cpu_s=cpu_s)
        finally:
            await redis.aclose()
            await pool.close()


async def enqueue_tasks(
    pool: asyncpg.Pool, redis: Redis, prefix: str, count: int, task: str = TASK
) -> None:
    tenant_id = await TenantStore(pool).ensure(f"bench-{prefix}", generate_key())
    publisher = Publisher(redis, QueueKeys(prefix))
    for start in range(0, count, CHUNK):
        batch = [
            Job(
                id=str(uuid7()),
                tenant_id=tenant_id,
                kind=JobKind.TASK,
                channel=task_channel(task),
                recipient=task,
                payload={"args": {}},
                priority=2,
                max_attempts=5,
            )
            for _ in range(min(CHUNK, count - start))
        ]
        ids = [job.id for job in batch]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
                " status, max_attempts) SELECT id, $2, $3, $4, $5::jsonb, 2, 'queued', 5"
                " FROM unnest($1::uuid[]) AS id",
                ids, tenant_id, task_channel(task), task, ARGS,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO audit (notification_id, status) SELECT id, 'queued'"
                " FROM unnest($1::uuid[]) AS id",
                ids,
            )
        await publisher.publish(batch)


async def _verify(pool: asyncpg.Pool, jobs: int, results: bool) -> None:
    query = (
        "SELECT count(*) FROM notifications n JOIN job_results r ON r.job_id = n.id"
        " WHERE n.status = 'delivered' AND r.finished_at IS NOT NULL"
        if results
        else "SELECT count(*) FROM notifications WHERE status = 'delivered'"
    )
    done = await pool.fetchval(query)
    if done != jobs:
        kept = "with a result row" if results else ""
        raise RuntimeError(f"{done} of {jobs} tasks succeeded {kept}")


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    results = not (len(sys.argv) > 2 and sys.argv[2] == "off")
    redis_url = os.environ.get("PULSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin_url = os.environ.get(
        "PULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    result = asyncio.run(drain_tasks(redis_url, admin_url, jobs, results=results))
    kept = "results kept" if results else "results off"
    print(f"{result.jobs} no-op tasks ({kept}) drained in {result.seconds:.2f} s:"
          f" {result.rate:,.0f}/s")  # fmt: skip


if __name__ == "__main__":
    main()
