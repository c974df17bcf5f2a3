"""Every query the API and a worker send during a full workflow uses an index on a filled table.

The database holds 300k delivered notifications over four past weekly partitions and this
week's (with their audit rows and attempts), analysed. Each statement the pools send (recorded
with asyncpg's query logger) is then EXPLAINed with its own arguments: no sequential scan of a
partition that holds rows is allowed (one of an empty partition reads nothing).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from bench.retention_scale import FILL_ATTEMPTS, FILL_AUDIT, FILL_NOTIFICATIONS, reshape
from pulse.channels.registry import build_channels, channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.lock import ExpiringLock
from pulse.runtime.retention import Retention, RetentionSettings
from pulse.runtime.worker import build_worker
from pulse.store import pool as pool_module
from pulse.store.retention import PartitionStore
from pulse.store.tenants import TenantStore
from tests import tasks_example
from tests.conftest import Client, RunningWorker, ServerUrls, fresh_database, wait_for_status
from tests.test_tasks import _until_registered as until_registered

pytestmark = pytest.mark.integration

ROWS = 300_000
BIG = ("notifications", "audit", "attempts", "job_results")
EXPLAINED = ("select", "with", "insert", "update", "delete")
Logged = list[tuple[str, tuple[Any, ...]]]


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    """A database of its own, filled and analysed before any pool connects."""
    async with fresh_database(server_urls.postgres, "pulse_plans") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET synchronous_commit = off")
            await reshape(conn)
            tenant = await conn.fetchval(
                "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'filler') RETURNING id"
            )
            now_ms = int(time.time() * 1000) - 3_600_000
            start_ms = now_ms - 27 * 86_400_000
            step = (now_ms - start_ms) / ROWS
            await conn.execute(FILL_NOTIFICATIONS, 0, ROWS - 1, start_ms, step, tenant)
            await conn.execute(FILL_AUDIT, 0, ROWS - 1, start_ms, step)
            await conn.execute(FILL_ATTEMPTS, 0, ROWS - 1, start_ms, step)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        yield url


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Logged:
    """Every statement sent on a pooled connection opened from now on, with its arguments."""
    statements: Logged = []
    connect = pool_module.connect

    async def logging_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        conn = await connect(*args, **kwargs)
        conn.add_query_logger(lambda q: statements.append((q.query, tuple(q.args or ()))))
        return conn

    monkeypatch.setattr(pool_module, "connect", logging_connect)
    return statements


@pytest.fixture
async def pool(logged: Logged, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await pool_module.create_pool(database_url, 1, 4)
    yield created
    await created.close()


@pytest.fixture
async def client(logged: Logged, settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def workflow(client: Client, pool: asyncpg.Pool, settings: Settings, redis: Redis) -> None:
    """What a tenant and a worker do in a day: send, replay, schedule, cancel, fan out, run a
    task and a chain, read, list, and the workers' periodic passes (retention among them, also
    on the filled weeks)."""
    tenant = await TenantStore(pool).create("workflow")
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    note = {"channel": "log", "recipient": "ops", "payload": {"message": "hi"}}
    stop = asyncio.Event()
    worker = build_worker(
        settings, redis, pool, build_channels(settings, quiet_log=True), Metrics(),
        [tasks_example.tasks],
    )  # fmt: skip
    running = RunningWorker(worker, asyncio.create_task(worker.run(stop)), stop)
    try:
        await until_registered(running)
        keyed = auth | {"Idempotency-Key": "plans-1"}
        locations = []
        for headers in (auth, keyed, keyed):
            response = await client.post("/api/notifications/", json=note, headers=headers)
            assert response.status == 202, await response.text()
            locations.append(response.headers["Location"])
        later = note | {"delay_s": 86_400, "metadata": {"team": "a"}}
        response = await client.post("/api/notifications/", json=later, headers=auth)
        assert response.status == 202, await response.text()
        scheduled = response.headers["Location"]
        assert (await client.post(scheduled + "/cancel", headers=auth)).status == 200
        batch = {"items": [note, note | {"recipient": "two"}]}
        response = await client.post("/api/notifications/batch", json=batch, headers=auth)
        assert response.status == 202, await response.text()
        job = await client.post(
            "/api/jobs/", json={"task": "example.add", "args": {"a": 1}}, headers=auth
        )
        assert job.status == 202, await job.text()
        parent = (await job.json())["id"]
        child = {"task": "example.add", "args": {"a": 2}, "after": [parent]}
        assert (await client.post("/api/jobs/", json=child, headers=auth)).status == 202
        for location in locations:
            await wait_for_status(client, auth, location, "delivered")
        answer = await client.get(f"/api/jobs/{parent}?wait=10", headers=auth)
        assert (await answer.json())["status"] == "succeeded", await answer.text()
        reads = (
            locations[0], locations[0] + "/attempts", "/api/notifications?limit=10",
            "/api/notifications?status=delivered&channel=log&limit=10",
            "/api/notifications?metadata.team=a", "/api/jobs?limit=10", "/api/dead-letters",
            f"/api/jobs/{parent}",
        )  # fmt: skip
        for path in reads:
            response = await client.get(path, headers=auth)
            assert response.status == 200, (path, await response.text())
        await worker.reconciler.reconcile_once()
        assert worker.retention is not None
        await worker.retention.run_once(datetime.now(UTC))
        await retention_on_filled_weeks(pool, redis, settings)
    finally:
        await running.shutdown()


async def retention_on_filled_weeks(pool: asyncpg.Pool, redis: Redis, settings: Settings) -> None:
    """A pass of one day's retention: the oldest week stays (a scheduled notification of it)
    and loses a batch of finished rows, the other past weeks are dropped."""
    oldest = await pool.fetchval("SELECT id FROM notifications ORDER BY id LIMIT 1")
    await pool.execute(
        "UPDATE notifications SET status = 'scheduled', send_at = now() + interval '1 day'"
        " WHERE id = $1",
        oldest,
    )
    lock = ExpiringLock(redis, QueueKeys(settings.key_prefix).lock("retention"), 60_000)
    short = RetentionSettings(days=1, batch=100, max_batches=1)
    done = await Retention(PartitionStore(pool), lock, short, Metrics()).run_once()
    assert done is not None
    assert len(done.kept) == 1
    # the legacy partition and the filled weeks that ended a day ago (two or three: by weekday)
    assert done.dropped[0] == "notifications_legacy"
    assert len(done.dropped) >= 3


def seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan":
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += seq_scans(child)
    return found


async def test_every_query_of_a_workflow_uses_an_index_on_a_filled_database(
    logged: Logged, client: Client, pool: asyncpg.Pool, settings: Settings, redis: Redis
) -> None:
    # Given a full workflow run against the filled database
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid"
        " WHERE i.inhparent::regclass::text = ANY($1) AND c.reltuples > 0",
        list(BIG),
    )
    filled = {row["relname"] for row in rows}
    assert len(filled) >= 4 * 3  # four past weeks of notifications, audit and attempts
    await workflow(client, pool, settings, redis)

    # When each statement it sent is EXPLAINed with its arguments
    statements: dict[str, tuple[Any, ...]] = {}  # each statement with the arguments it first had
    for query, args in logged:
        if query.lstrip().lower().startswith(EXPLAINED) and "pg_catalog" not in query:
            statements.setdefault(query, args)
    assert len(statements) > 40  # the workflow did reach its queries
    offenders = []
    async with pool.acquire() as conn:
        for query, args in statements.items():
            async with conn.transaction():
                try:
                    plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *args))
                except asyncpg.UndefinedTableError:  # a week the retention pass read, then dropped
                    continue
                except asyncpg.PostgresError as exc:  # a statement EXPLAIN cannot take as is
                    offenders.append(f"{exc!r}: {query}")
                    continue
            scanned = [name for name in seq_scans(plan[0]["Plan"]) if name in filled]
            if scanned:
                offenders.append(f"Seq Scan on {scanned}: {query}")

    # Then none reads a filled partition sequentially
    assert not offenders, "\n\n".join(offenders)
