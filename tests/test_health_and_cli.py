"""Health, readiness, metrics, migrations and the tenants command, as an operator uses them."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest

from pulse.config import Settings
from pulse.store.migrations import load_migrations, migrate
from pulse.store.tenants import TenantStore
from tests.conftest import (
    EXAMPLE,
    Client,
    RunningWorker,
    fresh_database,
    pulse_api_exit,
    wait_for_status,
)

pytestmark = pytest.mark.integration


async def test_healthz_and_readyz(client: Client) -> None:
    health = await client.get("/healthz")
    assert health.status == 200

    ready = await client.get("/readyz")
    body = msgspec.json.decode(await ready.read())
    assert ready.status == 200
    assert body["checks"] == {"redis": "ok", "postgres": "ok"}


async def test_readyz_is_503_while_migrations_are_pending(
    settings: Settings, database_url: str
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from pulse.channels.registry import channel_specs
    from pulse.http.app import create_app

    async with fresh_database(database_url, "pulse_empty", migrated=False) as url:
        empty = msgspec.structs.replace(settings, database_url=url)
        async with TestClient(TestServer(create_app(empty, channel_specs(empty)))) as client:
            ready = await client.get("/readyz")
            body = msgspec.json.decode(await ready.read())
    assert ready.status == 503
    assert ready.content_type == "application/problem+json"
    assert body["checks"]["postgres"].startswith("migrations pending")


async def test_metrics_count_accepted_and_delivered(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    await wait_for_status(client, auth, response.headers["Location"], "delivered")

    text = await (await client.get("/metrics")).text()

    assert 'pulse_notifications_accepted_total{channel="email",priority="1"} 1.0' in text
    assert "pulse_http_request_duration_seconds_bucket" in text


async def test_migrate_concurrently_applies_each_version_once(database_url: str) -> None:
    async with fresh_database(database_url, "pulse_migrate", migrated=False) as url:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        again = await migrate(conns[0])
        versions = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        for conn in conns:
            await conn.close()

    expected = [m.version for m in load_migrations()]
    assert sorted(v for batch in applied for v in batch) == expected  # each applied once
    assert again == []
    assert [row["version"] for row in versions] == expected


def test_bad_setting_stops_the_process_with_a_clear_message(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PULSE_HTTP_PORT": "eighty"}

    result = pulse_api_exit(env, tmp_path)

    assert result.returncode == 2
    assert "PULSE_HTTP_PORT='eighty' is invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_stops_the_process_with_one_line(tmp_path: Path) -> None:
    # Given: a PostgreSQL URL (with a password) where nothing listens
    from pulse.devtools.ports import free_port

    url = f"postgresql://pulse:s3cret-pw@127.0.0.1:{free_port('127.0.0.1')}/pulse"
    env = {"PATH": "/usr/bin:/bin", "PULSE_DATABASE_URL": url, "PULSE_REDIS_URL": "redis://x"}

    # When: the API starts
    result = pulse_api_exit(env, tmp_path)

    # Then: it stops with one line saying so, no traceback, no password
    assert result.returncode == 1
    assert "cannot reach a server it needs" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stderr


async def test_tenants_create_prints_a_working_key(settings: Settings, pool: asyncpg.Pool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_DATABASE_URL"] = settings.require_database_url()
    name = f"acme-{secrets.token_hex(3)}"

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pulse", "tenants", "create", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    key = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if "api key" in line)
    assert await TenantStore(pool).authenticate(key) is not None
    stored = await pool.fetchval(
        "SELECT count(*) FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " WHERE t.name = $1 AND position($2::bytea in k.key_hash) = 0",
        name,
        key.encode(),
    )
    assert stored == 1  # stored, but not in clear
