"""Scheduling precision: notifications due across a window, under a steady load of immediate
ones; how late each scheduled one was (p50, p99, max).

    python -m bench.schedule_precision          # 2,000 due across 15 s, 100/s of load
    python -m bench.schedule_precision --full   # 10,000 due across 60 s, 200/s of load

One API process and one worker process (``bench.pulse_worker``), a fresh database and key
prefix (servers from PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL, else its own). The
scheduled ones are accepted first, in batches whose items each carry their own ``send_at``
(due times spread evenly over the window, which opens once all are accepted); the load runs
through the whole window. Lateness, from PostgreSQL, per scheduled notification:

- streamed: its 'queued' audit row (written when the scheduler streamed it) - send_at;
- started: its first attempt's start - send_at (what a recipient sees, less the send itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from bench.processes import pulse_api, pulse_worker
from bench.scope import Scope, fresh_scope
from bench.servers import free_port, servers
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore

BATCH = 1000
BODY = {"recipient": "bench", "channel": "log", "payload": {"message": "load"}}
PROGRESS = """
SELECT count(*) FROM notifications n
 WHERE n.send_at IS NOT NULL AND EXISTS (SELECT 1 FROM attempts a WHERE a.notification_id = n.id)
"""
LATENESS = """
SELECT extract(epoch FROM q.at - n.send_at) * 1000 AS streamed_ms,
       extract(epoch FROM a.started_at - n.send_at) * 1000 AS started_ms
  FROM notifications n
  JOIN attempts a ON a.notification_id = n.id AND a.number = 1
  JOIN LATERAL (SELECT min(at) AS at FROM audit
                 WHERE notification_id = n.id AND status = 'queued') q ON true
 WHERE n.send_at IS NOT NULL
"""


async def measure(count: int, spread_s: float, load_rate: float) -> dict[str, Any]:
    with servers() as found:
        async with fresh_scope(found.redis_url, found.database_url) as scope:
            key = await _tenant_key(scope)
            with pulse_api(scope, free_port()) as base, pulse_worker(scope) as go:
                go()
                headers = {"Authorization": f"Bearer {key}"}
                async with aiohttp.ClientSession(headers=headers) as session:
                    opens = await _schedule(session, base, count, spread_s)
                    wait = (opens - datetime.now(UTC)).total_seconds()
                    await asyncio.sleep(max(wait, 0))
                    sent = await _load(session, base, load_rate, spread_s + 2)
                rows = await _wait_all(scope, count, timeout_s=120 + spread_s)
    streamed = [float(row["streamed_ms"]) for row in rows]
    started = [float(row["started_ms"]) for row in rows]
    return {
        "scheduled": count, "window_s": spread_s, "load_per_s": load_rate, "load_sent": sent,
        "servers": found.origin,
        "streamed_late_ms": _summary(streamed), "started_late_ms": _summary(started),
        "streamed_early": sum(1 for value in streamed if value < 0),
    }  # fmt: skip


def _summary(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "min": round(min(values), 1), "p50": round(cuts[49], 1), "p99": round(cuts[98], 1),
        "max": round(max(values), 1),
    }  # fmt: skip


async def _tenant_key(scope: Scope) -> str:
    pool = await create_pool(scope.database_url, 1, 1)
    try:
        return (await TenantStore(pool).create(f"bench-{scope.prefix}")).api_key
    finally:
        await pool.close()


async def _schedule(
    session: aiohttp.ClientSession, base: str, count: int, spread_s: float
) -> datetime:
    """Accept ``count`` notifications due evenly across ``spread_s`` from a time far enough
    ahead for all to be accepted (and fanned out) first; return when the window opens."""
    opens = datetime.now(UTC) + timedelta(seconds=5 + count / 1000)
    step = spread_s / count
    items = [
        BODY | {"payload": {"message": f"due {i}"}, "priority": i % 5,
                "send_at": (opens + timedelta(seconds=i * step)).isoformat()}
        for i in range(count)
    ]  # fmt: skip
    for start in range(0, count, BATCH):
        chunk = {"items": items[start : start + BATCH]}
        async with session.post(f"{base}/api/notifications/batch", json=chunk) as answer:
            if answer.status != 202:
                raise RuntimeError(f"batch answered {answer.status}: {await answer.text()}")
    if datetime.now(UTC) >= opens:
        raise RuntimeError("accepting took longer than the lead time; lower --count")
    return opens


async def _load(session: aiohttp.ClientSession, base: str, rate: float, seconds: float) -> int:
    """Immediate notifications at ``rate`` per second (open loop) for ``seconds``."""
    url = f"{base}/api/notifications/"

    async def post() -> None:
        async with session.post(url, json=BODY) as answer:
            await answer.read()

    tasks = []
    started = time.perf_counter()
    for i in range(round(rate * seconds)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post()))
    await asyncio.gather(*tasks)
    return len(tasks)


async def _wait_all(scope: Scope, count: int, timeout_s: float) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(scope.database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await conn.fetchval(PROGRESS) >= count:
                return await conn.fetch(LATENESS)
            await asyncio.sleep(0.5)
        states = await conn.fetch(
            "SELECT status, count(*) FROM notifications WHERE send_at IS NOT NULL GROUP BY 1"
        )
    finally:
        await conn.close()
    counts = {row[0]: row[1] for row in states}
    raise RuntimeError(f"not every scheduled notification was attempted in time: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="10,000 across 60 s, 200/s of load")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=15.0, help="window (s)")
    parser.add_argument("--load", type=float, default=100.0, help="immediate ones per second")
    args = parser.parse_args()
    if args.full:
        args.count, args.spread, args.load = 10_000, 60.0, 200.0
    print(json.dumps(asyncio.run(measure(args.count, args.spread, args.load)), indent=2))


if __name__ == "__main__":
    main()
