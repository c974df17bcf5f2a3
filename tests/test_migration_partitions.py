"""Migration 018 on a database filled under the old schema (up to 017): every row,
foreign key, trigger and identity is still there afterwards, each row in the partition of its
week, and Pulse works on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.store.migrations import migrate
from pulse.store.tenants import TenantStore
from tests.conftest import Client, ServerUrls, WorkerFactory, fresh_database, wait_for_status

pytestmark = pytest.mark.integration

FILLED = ("notifications", "audit", "attempts", "job_results", "dead_letters",
          "job_dependencies", "batches", "idempotency_keys")  # fmt: skip
FOREIGN_KEYS = {
    ("notifications", "notifications_tenant_id_fkey"),
    ("notifications", "notifications_receipt_for_fkey"),
    ("job_results", "job_results_job_id_fkey"),
    ("job_results", "job_results_tenant_id_fkey"),
    ("dead_letters", "dead_letters_notification_id_fkey"),
    ("job_dependencies", "job_dependencies_child_id_fkey"),
    ("job_dependencies", "job_dependencies_parent_id_fkey"),
}  # audit and attempts rows follow their notification by a trigger instead (sql/023)


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    """A database migrated up to 017 only (the old schema), filled by the test."""
    async with fresh_database(server_urls.postgres, "pulse_migrate", migrated=False) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, up_to=17)
        finally:
            await conn.close()
        yield url


def ms_ago(days: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)


async def fill_old_schema(conn: asyncpg.Connection, tenant_id: str) -> dict[str, str]:
    """Rows of every kind, made 60 days ago, today, and one id that is no UUIDv7."""
    ids = {
        "old": str(uuid7(ms_ago(60))),
        "receipt": str(uuid7(ms_ago(59))),
        "today": str(uuid7()),
        "parent": str(uuid7()),
        "child": str(uuid7()),
        "foreign": str(uuid.UUID("f" + uuid.uuid4().hex[1:])),  # sorts after every UUIDv7
    }
    insert = (
        "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
        " status, max_attempts, receipt_for, send_at)"
        " VALUES ($1, $2, $3, 'ops', '{\"message\": \"hi\"}', 2, $4, 3, $5, $6)"
    )
    rows: list[tuple[Any, ...]] = [
        (ids["old"], tenant_id, "log", "delivered", None, None),
        (ids["receipt"], tenant_id, "receipt", "delivered", ids["old"], None),
        (ids["today"], tenant_id, "log", "scheduled", None, datetime.now(UTC) + timedelta(days=9)),
        (ids["parent"], tenant_id, "task:t", "delivering", None, None),
        (ids["child"], tenant_id, "task:t", "waiting", None, None),
        (ids["foreign"], tenant_id, "log", "failed", None, None),
    ]
    await conn.executemany(insert, rows)
    for nid in ids.values():
        await conn.execute(
            "INSERT INTO audit (notification_id, status, detail) VALUES ($1, 'queued', 'x')", nid
        )
        await conn.execute(
            "INSERT INTO attempts (notification_id, number, started_at, duration_ms, outcome,"
            " worker) VALUES ($1, 1, now(), 2.5, 'retry', 'w')",
            nid,
        )
    await conn.execute(
        "INSERT INTO job_results (job_id, tenant_id, result) VALUES ($1, $2, '{\"x\": 1}')",
        ids["parent"], tenant_id,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO job_dependencies (child_id, parent_id) VALUES ($1, $2)",
        ids["child"], ids["parent"],
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO dead_letters (notification_id, tenant_id, reason, stream, entry_id)"
        " VALUES ($1, $2, 'failed', 's', '1-0'), (NULL, NULL, 'undecodable', 's', '2-0')",
        ids["foreign"], tenant_id,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO batches (id, tenant_id, items, priority) VALUES ($1, $2, '[]', 2)",
        uuid7(), tenant_id,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, state, expires_at)"
        " VALUES ($1, 'k', '\\x00', 'done', now() + interval '1 day')",
        tenant_id,
    )
    return ids


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of the filled tables, as JSON text, in a stable order."""
    return {
        table: sorted(
            row[0] for row in await conn.fetch(f"SELECT to_jsonb(t)::text FROM {table} AS t")
        )
        for table in FILLED
    }


async def test_migration_keeps_every_row_and_key_and_pulse_works_on_it(
    database_url: str,
    pool: asyncpg.Pool,
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    # Given a database filled under the old schema
    tenant = await TenantStore(pool).create("old-tenant")
    conn = await asyncpg.connect(database_url)
    try:
        ids = await fill_old_schema(conn, tenant.tenant_id)
        before = await snapshot(conn)
        last_audit = await conn.fetchval("SELECT max(id) FROM audit")

        # When the rest of the migrations run
        assert 18 in await migrate(conn)

        # Then every row is there as it was, in the partition of its week
        assert await snapshot(conn) == before
        where = {
            row["id"]: row["part"]
            for row in await conn.fetch(
                "SELECT id::text, tableoid::regclass::text AS part FROM notifications"
            )
        }
        monday = datetime.now(UTC).date() - timedelta(days=datetime.now(UTC).weekday())
        assert where[ids["old"]] == where[ids["receipt"]] == "notifications_legacy"
        assert where[ids["today"]] == f"notifications_w{monday:%Y%m%d}"
        assert where[ids["foreign"]] == "notifications_default"
        audit_parts = await conn.fetch(
            "SELECT DISTINCT tableoid::regclass::text AS part FROM audit"
            " WHERE notification_id = $1",
            ids["old"],
        )
        assert [row["part"] for row in audit_parts] == ["audit_legacy"]

        # And every foreign key and trigger is back, and the audit ids go on from the old ones
        keys = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, conname FROM pg_constraint"
            " WHERE contype = 'f' AND conparentid = 0"
        )
        assert {(row["t"], row["conname"]) for row in keys} >= FOREIGN_KEYS
        triggers = await conn.fetch(
            "SELECT tgname FROM pg_trigger"
            " WHERE tgrelid = 'notifications'::regclass AND NOT tgisinternal"
        )
        assert {row["tgname"] for row in triggers} == {
            "notifications_task_done", "notifications_release_children",
            "notifications_delete_log_rows",
        }  # fmt: skip
        new_audit = await conn.fetchval(
            "INSERT INTO audit (notification_id, status) VALUES ($1, 'x') RETURNING id", ids["old"]
        )
        assert new_audit > last_audit

        # And the triggers act: the parent's end releases its waiting child
        await conn.execute(
            "UPDATE notifications SET status = 'delivered' WHERE id = $1", ids["parent"]
        )
        child = await conn.fetchval("SELECT status FROM notifications WHERE id = $1", ids["child"])
        assert child == "queued"
        # And a notification deleted takes its rows along, its receipt's too (the receipt by
        # the foreign key, the audit and attempts rows by the trigger of sql/023)
        await conn.execute("DELETE FROM notifications WHERE id = $1", ids["old"])
        for table in ("audit", "attempts"):
            sql = f"SELECT count(*) FROM {table} WHERE notification_id = ANY($1)"
            assert await conn.fetchval(sql, [ids["old"], ids["receipt"]]) == 0
    finally:
        await conn.close()

    # And Pulse accepts and delivers on the migrated database
    start_worker(settings)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    body = {"channel": "log", "recipient": "ops", "payload": {"message": "after"}}
    response = await client.post("/api/notifications/", json=body, headers=headers)
    assert response.status == 202, await response.text()
    await wait_for_status(client, headers, response.headers["Location"], "delivered")
