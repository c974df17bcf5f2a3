"""Dead letters as a tenant and an operator see them: list, show, replay, purge."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.queue.keys import QueueKeys
from pulse.store.tenants import TenantStore
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


@pytest.fixture
async def dead(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    smtp: ScriptedSmtp,
    start_worker: WorkerFactory,
) -> list[str]:
    """Two dead notifications: one gave up after a 451 (would succeed now), one was refused."""
    start_worker(
        msgspec.structs.replace(settings, smtp_port=smtp.port, worker_reclaim_interval_ms=50)
    )
    locations = []
    for recipient in ("flaky1-eve@example.com", "reject-fay@example.com"):
        body = EXAMPLE | {"recipient": recipient, "max_attempts": 1}
        response = await client.post("/api/notifications/", json=body, headers=auth)
        locations.append(response.headers["Location"])
    for location in locations:
        assert (await wait_for_status(client, auth, location, "failed"))["status"] == "failed"
    return [location.rsplit("/", 1)[1] for location in locations]


async def get_json(client: Client, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    return msgspec.json.decode(await response.read())


async def test_list_filters_and_is_tenant_scoped(
    client: Client, auth: dict[str, str], dead: list[str], pool: asyncpg.Pool
) -> None:
    listing = await get_json(client, "/api/dead-letters", auth)
    assert {item["notification_id"] for item in listing["items"]} == set(dead)

    refused = await get_json(client, "/api/dead-letters?error_class=SMTP550", auth)
    assert [item["notification_id"] for item in refused["items"]] == [dead[1]]
    none = await get_json(client, "/api/dead-letters?channel=log", auth)
    assert none["items"] == []

    other = await TenantStore(pool).create(f"other-{dead[0][-6:]}")
    foreign = {"Authorization": f"Bearer {other.api_key}"}
    assert (await get_json(client, "/api/dead-letters", foreign))["items"] == []
    first_id = listing["items"][0]["id"]
    assert (await client.get(f"/api/dead-letters/{first_id}", headers=foreign)).status == 404

    bad = await client.get("/api/dead-letters?since=yesterday", headers=auth)
    assert bad.status == 422


async def test_show_has_the_attempts(client: Client, auth: dict[str, str], dead: list[str]) -> None:
    listing = await get_json(client, "/api/dead-letters?error_class=SMTP550", auth)
    shown = await get_json(client, f"/api/dead-letters/{listing['items'][0]['id']}", auth)

    assert shown["notification"]["id"] == dead[1]
    assert [(a["number"], a["outcome"], a["error_class"]) for a in shown["attempts"]] == [
        (1, "failed", "SMTP550")
    ]


async def test_replay_gives_fresh_attempts_and_is_audited(
    client: Client,
    auth: dict[str, str],
    dead: list[str],
    smtp: ScriptedSmtp,
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
) -> None:
    listing = await get_json(client, "/api/dead-letters?error_class=SMTP451", auth)
    dead_letter_id = listing["items"][0]["id"]

    response = await client.post(f"/api/dead-letters/{dead_letter_id}/replay", headers=auth)

    assert response.status == 202
    document = await wait_for_status(client, auth, f"/api/notifications/{dead[0]}", "delivered")
    assert smtp.handler.accepted[f"<{dead[0]}@pulse>"] == 1
    details = [h["detail"] for h in document["history"] if h["status"] == "replayed"]  # type: ignore[attr-defined]
    key_id = await pool.fetchval(
        "SELECT k.id::text FROM api_keys k JOIN notifications n ON n.tenant_id = k.tenant_id"
        " WHERE n.id = $1",
        dead[0],
    )
    assert details == [f"replayed by key {key_id}"]
    remaining = await get_json(client, "/api/dead-letters", auth)
    assert [item["notification_id"] for item in remaining["items"]] == [dead[1]]
    dead_stream: Any = await redis.xrange(QueueKeys(settings.key_prefix).dead_letters())
    assert [f[b"job"].decode() for _, f in dead_stream] == [dead[1]]


async def test_replay_by_filter_and_purge(
    client: Client, auth: dict[str, str], dead: list[str], redis: Redis, settings: Settings
) -> None:
    replayed = await client.post(
        "/api/dead-letters/replay", json={"error_class": "SMTP550", "rate": 50}, headers=auth
    )
    assert msgspec.json.decode(await replayed.read()) == {"replayed": 1}
    await wait_for_status(client, auth, f"/api/notifications/{dead[1]}", "failed")
    for _ in range(100):  # the refused mail dies again; wait for its new dead letter
        listing = await get_json(client, "/api/dead-letters?error_class=SMTP550", auth)
        if listing["items"]:
            break
        await asyncio.sleep(0.05)

    for item in (await get_json(client, "/api/dead-letters", auth))["items"]:
        purged = await client.delete(f"/api/dead-letters/{item['id']}", headers=auth)
        assert purged.status == 204

    assert (await get_json(client, "/api/dead-letters", auth))["items"] == []
    assert await redis.xlen(QueueKeys(settings.key_prefix).dead_letters()) == 0


async def test_cli_lists_and_replays_across_tenants(dead: list[str], settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
    )

    def pulse(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "pulse", "dlq", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = [msgspec.json.decode(line) for line in pulse("list").splitlines()]
    assert set(dead) <= {item["notification_id"] for item in listed}
    ids = [str(item["id"]) for item in listed if item["notification_id"] == dead[0]]

    assert (await asyncio.to_thread(pulse, "replay", "--id", ids[0])).strip() == "replayed 1"
