"""The worker's two statements per delivery (claim, record) alone, on one connection, against
the schema with and without a later migration: what a schema change costs the drain in
PostgreSQL, without Redis or a worker's CPU in the figure.

Each run: a fresh database migrated up to the version compared (``--up-to``, default the one
before the newest) and one migrated fully, N queued notifications committed and analysed
(untimed), then claimed 200 at a time and recorded delivered 500 at a time, as a worker's
fetcher and acker batch them. Interleaved, the median of ``--runs``; the ratio is what counts.
With ``--filled-url`` (a database kept by ``bench.retention_scale --fill-only``): a fresh empty
database against that filled one instead, the same N notifications added to it each run.

    .venv/bin/python -m bench.ledger_statements [--jobs 20000] [--runs 5] [--up-to 22]
    .venv/bin/python -m bench.ledger_statements --filled-url postgresql://.../pulse_bench_filled_x
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind, Status
from pulse.store.ledger import AttemptRow, DeliveryLedger, OutcomeRow
from pulse.store.migrations import load_migrations, migrate

CLAIM_BATCH, RECORD_BATCH = 200, 500  # PULSE_WORKER_BATCH_SIZE, PULSE_WORKER_ACK_BATCH


@asynccontextmanager
async def database(admin_url: str, up_to: int | None, filled: str | None) -> AsyncIterator[str]:
    if filled:
        yield filled
        return
    name = f"pulse_bench_ledger_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, up_to)
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def queued(url: str, jobs: int) -> list[str]:
    """``jobs`` queued notifications of one tenant with their audit rows, as the API leaves them."""
    conn = await asyncpg.connect(url)
    try:
        tenant = uuid.uuid4()
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant, str(tenant))
        ids = [str(uuid7()) for _ in range(jobs)]
        await conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
            " status, max_attempts)"
            " SELECT i, $2, 'log', 'ops', '{}', 2, 'queued', 3 FROM unnest($1::uuid[]) AS i",
            ids, tenant,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO audit (notification_id, status)"
            " SELECT i, 'queued' FROM unnest($1::uuid[]) AS i",
            ids,
        )
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        return ids
    finally:
        await conn.close()


def job(notification_id: str) -> Job:
    return Job(
        id=notification_id, tenant_id="t", kind=JobKind.NOTIFICATION, channel="log",
        recipient="ops", payload={}, priority=2, max_attempts=3,
    )  # fmt: skip


async def claim_and_record(url: str, ids: list[str]) -> float:
    """Notifications per second through claim and record, one connection."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    ledger = DeliveryLedger(pool)
    now = datetime.now(UTC)
    try:
        started = time.perf_counter()
        for first in range(0, len(ids), RECORD_BATCH):
            chunk = ids[first : first + RECORD_BATCH]
            for at in range(0, len(chunk), CLAIM_BATCH):
                claimed = [job(i) for i in chunk[at : at + CLAIM_BATCH]]
                await ledger.claim(claimed, "bench", 60.0)
            outcomes = [
                OutcomeRow(i, Status.DELIVERED, None, None, False, "s", "1-0") for i in chunk
            ]
            attempts = [
                AttemptRow(i, 1, "log", "log", now, 0.1, "delivered", None, None, None)
                for i in chunk
            ]
            await ledger.record(outcomes, attempts, "bench", 3)
        return len(ids) / (time.perf_counter() - started)
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    newest = load_migrations()[-1].version
    parser.add_argument("--up-to", type=int, default=load_migrations()[-2].version)
    parser.add_argument("--filled-url", help="compare an empty database with this filled one")
    args = parser.parse_args()
    admin_url = os.environ.get(
        "PULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    schemas: dict[str, tuple[int | None, str | None]] = (
        {"empty": (None, None), "filled": (None, args.filled_url)}
        if args.filled_url
        else {f"up to {args.up_to:03d}": (args.up_to, None), f"up to {newest:03d}": (None, None)}
    )
    rates: dict[str, list[float]] = {name: [] for name in schemas}
    for run in range(1, args.runs + 1):
        for name, (up_to, filled) in schemas.items():
            async with database(admin_url, up_to, filled) as url:
                rate = await claim_and_record(url, await queued(url, args.jobs))
            rates[name].append(rate)
            print(f"run {run}: {name}: {rate:,.0f}/s", flush=True)
    before, after = (statistics.median(r) for r in rates.values())
    print(f"\n{args.jobs} notifications, claim + record on one connection; median of {args.runs}")
    print("| database | claimed and recorded /s | vs the first |")
    print("|---|---|---|")
    for (name, _), median in zip(schemas.items(), (before, after), strict=True):
        print(f"| {name} | {median:,.0f} | {median / before:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
