"""Fairness between tenants inside one priority: a small tenant behind another's flood.

Tenant A has ``--flood`` log notifications queued (default 20,000; ``--full`` 200,000) at
priority 2 and a worker process (PULSE_TENANT_FAIRNESS=1) draining them; then tenant B sends
100 at the same priority. Reported: how long B's 100 took from their append to their last
delivery, how many of A's were delivered meanwhile (A keeps its share), and how many of A's
were still queued (B did not wait for A's backlog).

    .venv/bin/python -m bench.fairness [--full] [--flood N] [--unfair]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg
from redis.asyncio import Redis

from bench.processes import pulse_worker
from bench.scope import fresh_scope
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore, generate_key

CHUNK = 1000
SMALL = 100
POLL_S = 0.01


async def enqueue_for(
    pool: asyncpg.Pool,
    redis: Redis,
    prefix: str,
    tenant: str,
    count: int,
    priority: int = 2,
    fair: bool = True,
) -> list[str]:
    """Commit ``count`` queued log notifications of tenant ``tenant`` (made if new) and append
    them to their tenant's sub-stream, as the API does with PULSE_TENANT_FAIRNESS on."""
    tenant_id = await TenantStore(pool).ensure(tenant, generate_key())
    publisher = Publisher(redis, QueueKeys(prefix), fair=fair)
    ids: list[str] = []
    for start in range(0, count, CHUNK):
        batch = [
            Job(
                id=str(uuid7()), tenant_id=tenant_id, kind=JobKind.NOTIFICATION, channel="log",
                recipient="bench", payload={"message": "fair"}, priority=priority,
                max_attempts=5,
            )
            for _ in range(min(CHUNK, count - start))
        ]  # fmt: skip
        await pool.execute(
            "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
            " status, max_attempts) SELECT id, $2, 'log', 'bench', '{\"message\": \"fair\"}',"
            " $3, 'queued', 5 FROM unnest($1::uuid[]) AS id",
            [job.id for job in batch],
            tenant_id,
            priority,
        )
        await publisher.publish(batch)
        ids += [job.id for job in batch]
    return ids


async def delivered(pool: asyncpg.Pool, ids: list[str]) -> int:
    found: int = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[]) AND status = 'delivered'",
        ids,
    )
    return found


async def until_delivered(pool: asyncpg.Pool, ids: list[str], count: int) -> None:
    for _ in range(int(600 / POLL_S)):
        if await delivered(pool, ids) >= count:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError("not delivered within ten minutes")


async def measure(redis_url: str, admin_url: str, flood: int, fair: bool) -> None:
    async with fresh_scope(redis_url, admin_url) as scope:
        pool = await create_pool(scope.database_url, 1, 4)
        redis: Redis = Redis.from_url(redis_url)
        try:
            a = await enqueue_for(pool, redis, scope.prefix, f"a-{scope.prefix}", flood, fair=fair)
            with pulse_worker(scope, {"PULSE_TENANT_FAIRNESS": "1" if fair else "0"}) as go:
                started = go()
                await until_delivered(pool, a[:1000], 1000)
                a_rate = 1000 / (time.perf_counter() - started)
                sent_at = await pool.fetchval("SELECT clock_timestamp()")
                b = await enqueue_for(
                    pool, redis, scope.prefix, f"b-{scope.prefix}", SMALL, fair=fair
                )
                await until_delivered(pool, b, SMALL)
                last_b = await pool.fetchval(
                    "SELECT max(at) FROM audit WHERE notification_id = ANY($1::uuid[])"
                    " AND status = 'delivered'",
                    b,
                )
                a_during = await pool.fetchval(
                    "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])"
                    " AND status = 'delivered' AND at > $2 AND at <= $3",
                    a,
                    sent_at,
                    last_b,
                )
                a_left = flood - await pool.fetchval(
                    "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])"
                    " AND status = 'delivered' AND at <= $2",
                    a,
                    last_b,
                )
            took = (last_b - sent_at).total_seconds()
            print(f"fairness {'on' if fair else 'off'}; tenant A: {flood} queued at priority 2")
            print(f"worker alone drained A at ~{a_rate:.0f}/s")
            print(f"tenant B: all {SMALL} delivered {took:.2f} s after B's append began")
            print(f"meanwhile A: {a_during} delivered; {a_left} of A's still queued then")
        finally:
            await redis.aclose()
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="tenant A floods 200,000")
    parser.add_argument("--flood", type=int, default=20_000)
    parser.add_argument("--unfair", action="store_true", help="fairness off (the baseline)")
    args = parser.parse_args()
    flood = 200_000 if args.full else args.flood
    redis_url = os.environ.get("PULSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin_url = os.environ.get(
        "PULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    asyncio.run(measure(redis_url, admin_url, flood, not args.unfair))


if __name__ == "__main__":
    main()
