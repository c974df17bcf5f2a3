"""Accept and drain rates with millions of notifications already stored vs an empty database.

One command: ``python -m bench.retention_scale`` (``--rows 10000000 --rounds 3``). It checks the
free disk space, creates a database of its own, migrates it, gives it four past weekly
partitions as a month of running leaves them (the migration's empty ``_legacy`` partitions end
four weeks back instead of this Monday), fills them with ``--rows`` delivered notifications
spread over the last 27 days, each with its three audit rows (queued, delivering, delivered)
and one attempt (INSERT ... SELECT generate_series), then VACUUM ANALYZE, as a database in
steady state is. Then, interleaved and ``--rounds`` times: the accept rate (wrk, 64
connections, one API process, as bench/accept.py) and one worker's drain rate (as
bench/pulse_drain.py) against a fresh empty database and against the filled one; last, the
time a retention pass takes to drop the oldest filled week. It prints each run, the medians and
the drop as JSON, and drops the filled database at the end (``--keep`` keeps
it, ``--fill-only`` only fills it, ``--filled-url`` measures against one kept before, without
the drop, which would remove a week of its rows, unless ``--drop`` asks for it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from bench.accept import accept_in
from bench.processes import pulse_worker
from bench.pulse_drain import enqueue_bulk, wait_acknowledged
from bench.scope import Scope, _delete_keys, fresh_scope
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.lock import ExpiringLock
from pulse.runtime.retention import Retention, RetentionSettings
from pulse.store.migrations import migrate_database
from pulse.store.pool import create_pool
from pulse.store.retention import PartitionStore
from pulse.store.tenants import TenantStore, generate_key

CHUNK = 500_000
SPAN_DAYS = 27
PAST_WEEKS = 4
MIN_FREE_BYTES = 20 * 2**30
TABLES = ("audit", "attempts", "job_results", "notifications")  # children first

# A UUIDv7 for row i made at `ms`: the time, then 74 bits taken from md5(i).
_ID = (
    "(lpad(to_hex({ms}), 12, '0') || '7' || substr(md5(i::text), 1, 3) || '8'"
    " || substr(md5(i::text), 4, 15))::uuid"
)
_MS = "($3::bigint + (i * $4::double precision)::bigint)"
FILL_NOTIFICATIONS = f"""
INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority, status,
                           max_attempts, attempts, created_at, updated_at, delivered_at)
SELECT {_ID.format(ms=_MS)}, $5, 'log', 'user-' || (i % 100000), '{{"message": "filled"}}', 2,
       'delivered', 5, 1, at, at + interval '1 second', at + interval '1 second'
  FROM generate_series($1::bigint, $2::bigint) AS i,
       LATERAL (SELECT to_timestamp({_MS} / 1000.0) AS at) AS t
"""
FILL_AUDIT = f"""
INSERT INTO audit (notification_id, status, at, worker)
SELECT {_ID.format(ms=_MS)}, s.status, to_timestamp({_MS} / 1000.0) + s.after, 'filler'
  FROM generate_series($1::bigint, $2::bigint) AS i,
       (VALUES ('queued', interval '0'), ('delivering', interval '0.5 s'),
               ('delivered', interval '1 s')) AS s(status, after)
"""
FILL_ATTEMPTS = f"""
INSERT INTO attempts (notification_id, number, started_at, duration_ms, outcome, worker,
                      channel, provider)
SELECT {_ID.format(ms=_MS)}, 1, to_timestamp({_MS} / 1000.0) + interval '0.5 s', 3.5,
       'delivered', 'filler', 'log', 'log'
  FROM generate_series($1::bigint, $2::bigint) AS i
"""


async def reshape(conn: asyncpg.Connection) -> None:
    """Partitions as after a month of running: _legacy ends PAST_WEEKS back, weeks since then."""
    this_week = await conn.fetchval("SELECT date_trunc('week', now() AT TIME ZONE 'UTC')::date")
    async with conn.transaction():
        for table in TABLES:
            if table == "notifications":
                await conn.execute(
                    "ALTER TABLE notifications DETACH PARTITION notifications_legacy"
                )
            await conn.execute(f"DROP TABLE {table}_legacy")
        start = f"(pulse_id_bound(($1::date - {7 * PAST_WEEKS})::timestamp AT TIME ZONE 'UTC'))"
        for table in reversed(TABLES):
            bound = await conn.fetchval(f"SELECT {start}::text", this_week)
            await conn.execute(
                f"CREATE TABLE {table}_legacy PARTITION OF {table}"
                f" FOR VALUES FROM (MINVALUE) TO ('{bound}')"
            )
        await conn.execute(
            f"SELECT pulse_create_week($1::date - 7 * w) FROM generate_series(1, {PAST_WEEKS}) w",
            this_week,
        )


async def fill(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        await reshape(conn)
        pool = await create_pool(url, 1, 1)
        try:
            tenant = await TenantStore(pool).ensure("filler", generate_key())
        finally:
            await pool.close()
        now_ms = int(time.time() * 1000) - 3_600_000
        start_ms = now_ms - SPAN_DAYS * 86_400_000
        step = (now_ms - start_ms) / rows
        started = time.perf_counter()
        for lo in range(0, rows, CHUNK):
            hi = min(rows, lo + CHUNK) - 1
            async with conn.transaction():
                await conn.execute(FILL_NOTIFICATIONS, lo, hi, start_ms, step, tenant)
                await conn.execute(FILL_AUDIT, lo, hi, start_ms, step)
                await conn.execute(FILL_ATTEMPTS, lo, hi, start_ms, step)
            print(f"fill: {hi + 1:,} rows, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        await conn.execute("VACUUM (ANALYZE)")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"fill: done in {time.perf_counter() - started:.0f} s, {size}", file=sys.stderr)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def filled_database(admin_url: str, rows: int, keep: bool) -> AsyncIterator[str]:
    admin = await asyncpg.connect(admin_url)
    directory = await admin.fetchval("SHOW data_directory")
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        await admin.close()
        raise SystemExit(f"bench: {free / 2**30:.1f} GiB free under {directory}, want 20")
    name = f"pulse_bench_filled_{secrets.token_hex(4)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    try:
        await migrate_database(url)
        await fill(url, rows)
        yield url
    finally:
        if keep:
            print(f"bench: kept {url} (--filled-url reuses it; drop it when done)", file=sys.stderr)
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def given_database(url: str) -> AsyncIterator[str]:
    """A database filled by an earlier ``--keep`` run, migrated to this checkout's schema."""
    await migrate_database(url)
    yield url


@contextlib.asynccontextmanager
async def scope_in(redis_url: str, database_url: str) -> AsyncIterator[Scope]:
    """A key prefix of its own on an existing database."""
    prefix = f"bench{secrets.token_hex(4)}"
    try:
        yield Scope(redis_url, database_url, prefix)
    finally:
        await _delete_keys(redis_url, prefix, cluster=False)


async def accept(scope: Scope, seconds: float) -> float:
    rps: float = (await accept_in(scope, seconds))["rps"]
    return rps


async def drain(scope: Scope, jobs: int) -> float:
    pool = await create_pool(scope.database_url, 1, 2)
    redis: Redis = Redis.from_url(scope.redis_url)
    try:
        ids = await enqueue_bulk(pool, redis, scope.prefix, jobs)
        with pulse_worker(scope) as go:
            started = go()
            await wait_acknowledged(redis, QueueKeys(scope.prefix))  # tenants' lanes too
            seconds = time.perf_counter() - started
        written = await pool.fetchval(
            "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])", ids
        )
        if written != 3 * jobs:  # queued, delivering, delivered: the figure counts only then
            raise RuntimeError(f"{written} audit rows for {jobs} drained notifications")
        return jobs / seconds
    finally:
        await redis.aclose()
        await pool.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[float]] = {
        "accept_empty": [], "accept_filled": [], "drain_empty": [], "drain_filled": [],
    }  # fmt: skip
    filled = (
        given_database(args.filled_url)
        if args.filled_url
        else filled_database(args.database_url, args.rows, args.keep or args.fill_only)
    )
    async with filled as filled_url:
        if args.fill_only:
            return {"filled_url": filled_url}
        for n in range(args.rounds):
            order = ("empty", "filled") if n % 2 == 0 else ("filled", "empty")
            for what in ("accept", "drain"):
                for kind in order:
                    if kind == "empty":
                        async with fresh_scope(args.redis_url, args.database_url) as scope:
                            rate = await _one(what, scope, args)
                    else:
                        async with scope_in(args.redis_url, filled_url) as scope:
                            rate = await _one(what, scope, args)
                    runs[f"{what}_{kind}"].append(rate)
                    print(f"{what} {kind}: {rate:,.0f}/s", file=sys.stderr)
        drop: dict[str, Any] | None = None
        if not args.filled_url or args.drop:  # a kept database keeps its rows unless asked
            drop = await time_drop(args.redis_url, filled_url)
            print(f"drop: {drop}", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "drop": drop,
        "rows": args.rows,
        "runs": runs,
        "medians": medians,
        "accept_ratio": medians["accept_filled"] / medians["accept_empty"],
        "drain_ratio": medians["drain_filled"] / medians["drain_empty"],
    }


async def time_drop(redis_url: str, url: str) -> dict[str, Any]:
    """One retention pass (30 days) run as if 30 days and an hour after the oldest filled week
    ended: the time it takes to drop that week with its audit rows and attempts."""
    pool = await create_pool(url, 1, 2)
    redis: Redis = Redis.from_url(redis_url)
    store = PartitionStore(pool)
    try:
        ended = await store.ended_weeks(datetime.now(UTC) + timedelta(days=3650))
        oldest = next(week for week in ended if week.name != "notifications_legacy")
        rows = await pool.fetchval(f"SELECT count(*) FROM {oldest.name}")
        monday = datetime.strptime(oldest.name[-8:], "%Y%m%d").replace(tzinfo=UTC)
        lock = ExpiringLock(redis, QueueKeys(f"bench{secrets.token_hex(4)}").lock("r"), 600_000)
        retention = Retention(store, lock, RetentionSettings(days=30), Metrics())
        started = time.perf_counter()
        done = await retention.run_once(monday + timedelta(days=7 + 30, hours=1))
        seconds = time.perf_counter() - started
        assert done is not None
        return {"week": oldest.name, "notifications": rows, "seconds": seconds,
                "dropped": done.dropped, "deleted": done.deleted}  # fmt: skip
    finally:
        await redis.aclose()
        await pool.close()


async def _one(what: str, scope: Scope, args: argparse.Namespace) -> float:
    if what == "accept":
        return await accept(scope, args.accept_s)
    return await drain(scope, args.drain_jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accept-s", type=float, default=10.0)
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    parser.add_argument("--fill-only", action="store_true", help="fill, keep it, measure nothing")
    parser.add_argument("--filled-url", help="measure against this database filled by --keep")
    parser.add_argument(
        "--drop", action="store_true", help="with --filled-url: time the drop of its oldest week"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    result = asyncio.run(measure(parser.parse_args()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
