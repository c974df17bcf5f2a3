"""Pulse's latency at a steady rate (open loop: requests sent on schedule, not back to back):
the POST's answer time, seen by the client, and accepted → first attempt started, from
PostgreSQL (the notification's ``created_at`` to its first attempt row's ``started_at``).

``created_at`` is the API's transaction start, so that figure holds the API's own work too;
``answered_to_started`` splits the worker's share off: from the moment the client had the 202
(after the commit and the stream append) to the attempt's start, on the same clock (one
machine). It can be negative: the worker may start before the answer reaches the client.

One API process and one worker process, both running before the first request. The first
second's notifications are a warm-up, not counted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import asyncpg

from bench.processes import pulse_api, pulse_worker
from bench.scope import Scope, fresh_scope
from bench.servers import free_port
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore

BODY = {"recipient": "bench", "channel": "log", "payload": {"message": "benchmark"}}
DRAIN_TIMEOUT_S = 60.0
STARTED = """
SELECT n.id::text AS id, extract(epoch FROM a.started_at - n.created_at) * 1000 AS ms,
       extract(epoch FROM a.started_at) AS started
FROM notifications n JOIN attempts a ON a.notification_id = n.id AND a.number = 1
ORDER BY n.created_at
"""


# A task's start is its job_results row's (the first attempt's, as no-op tasks do not retry).
TASK_STARTED = """
SELECT extract(epoch FROM r.started_at - n.created_at) * 1000 AS ms
FROM notifications n JOIN job_results r ON r.job_id = n.id AND r.started_at IS NOT NULL
ORDER BY n.created_at
"""
TASK_BODY = {"task": "bench.noop", "args": {}}


def percentiles(values: list[float], warmup: int) -> tuple[float, float]:
    counted = values[warmup:] if len(values) > warmup else values
    cuts = statistics.quantiles(counted, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def pulse_latency(
    redis_url: str, admin_url: str, rate: float, seconds: float
) -> dict[str, Any]:
    count = max(10, round(rate * seconds))
    async with fresh_scope(redis_url, admin_url) as scope:
        key = await _tenant_key(scope)
        with pulse_api(scope, free_port()) as base, pulse_worker(scope) as go:
            go()
            sent = await _send(base + "/api/notifications/", key, rate, count)
            rows = await _wait_started(scope, count)
    warmup = round(rate)
    answer_p50, answer_p99 = percentiles([answer_ms for answer_ms, _, _ in sent], warmup)
    start_p50, start_p99 = percentiles([float(row["ms"]) for row in rows], warmup)
    started = {row["id"]: float(row["started"]) for row in rows}
    after = [(started[ident] - answered) * 1000 for _, ident, answered in sent]
    after_p50, after_p99 = percentiles(after, warmup)
    return {
        "rate": rate, "count": count, "answer_p50_ms": answer_p50, "answer_p99_ms": answer_p99,
        "p50_ms": start_p50, "p99_ms": start_p99,
        "answered_to_started_p50_ms": after_p50, "answered_to_started_p99_ms": after_p99,
    }  # fmt: skip


async def pulse_task_latency(
    redis_url: str, admin_url: str, rate: float, seconds: float
) -> dict[str, Any]:
    """The same for a no-op task: ``POST /api/jobs/`` on schedule, accepted → task started."""
    count = max(10, round(rate * seconds))
    async with fresh_scope(redis_url, admin_url) as scope:
        key = await _tenant_key(scope)
        env = {"PULSE_TASKS": "bench.noop_tasks"}
        with pulse_api(scope, free_port()) as base, pulse_worker(scope, env) as go:
            go()
            await _until_published(scope, str(TASK_BODY["task"]))
            sent = await _send(base + "/api/jobs/", key, rate, count, TASK_BODY)
            rows = await _wait_started(scope, count, TASK_STARTED)
    warmup = round(rate)
    answer_p50, answer_p99 = percentiles([answer_ms for answer_ms, _, _ in sent], warmup)
    start_p50, start_p99 = percentiles([float(row["ms"]) for row in rows], warmup)
    return {
        "rate": rate, "count": count, "answer_p50_ms": answer_p50, "answer_p99_ms": answer_p99,
        "p50_ms": start_p50, "p99_ms": start_p99,
    }  # fmt: skip


async def _until_published(scope: Scope, task: str) -> None:
    """The worker has published its tasks: the API accepts them from then on."""
    conn = await asyncpg.connect(scope.database_url)
    try:
        for _ in range(600):
            if await conn.fetchval("SELECT 1 FROM task_registry WHERE name = $1", task):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise RuntimeError(f"the worker never published {task}")


async def _tenant_key(scope: Scope) -> str:
    pool = await create_pool(scope.database_url, 1, 1)
    try:
        return (await TenantStore(pool).create(f"bench-{scope.prefix}")).api_key
    finally:
        await pool.close()


async def _send(
    url: str, key: str, rate: float, count: int, body: dict[str, Any] = BODY
) -> list[tuple[float, str, float]]:
    """POST ``count`` bodies on schedule; in send order, each answer's time in ms, the
    accepted id, and when the answer came (epoch seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def post() -> tuple[float, str, float]:
            sent = time.perf_counter()
            async with session.post(url, json=body) as answer:
                answer_body = await answer.read()
                answered = time.time()
                if answer.status != 202:
                    raise RuntimeError(f"POST answered {answer.status}: {await answer.text()}")
            return (time.perf_counter() - sent) * 1000, json.loads(answer_body)["id"], answered

        tasks = []
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post()))
        return list(await asyncio.gather(*tasks))


async def _wait_started(scope: Scope, count: int, query: str = STARTED) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(scope.database_url)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            rows = await conn.fetch(query)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError(f"not every notification was attempted within {DRAIN_TIMEOUT_S:.0f} s")
