"""Batches: each item answered on its own, the fan-out done by workers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest

from pulse.config import Settings
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, Client, WorkerFactory

pytestmark = pytest.mark.integration


async def count_for(pool: asyncpg.Pool, tenant: NewTenant, status: str | None = None) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE tenant_id = $1 AND ($2::text IS NULL"
        " OR status = $2)",
        tenant.tenant_id,
        status,
    )
    return count


async def wait_delivered(pool: asyncpg.Pool, tenant: NewTenant, expected: int) -> None:
    for _ in range(600):
        if await count_for(pool, tenant, "delivered") == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the batch was not delivered")


async def test_items_are_answered_one_by_one_and_fanned_out_by_workers(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    tenant: NewTenant,
) -> None:
    items: list[Any] = [EXAMPLE, EXAMPLE | {"recipient": "nope"}, EXAMPLE | {"priority": 4}]

    response = await client.post("/api/notifications/batch", json={"items": items}, headers=auth)
    body = msgspec.json.decode(await response.read())

    assert response.status == 202
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["index"] for r in body["items"]] == [0, 1, 2]
    assert body["items"][1]["errors"][0]["pointer"] == "/1/recipient"
    ids = [r["id"] for r in body["items"] if "id" in r]
    assert len(ids) == 2
    assert await count_for(pool, tenant) == 0  # nothing fanned out in the request

    start_worker(settings)
    await wait_delivered(pool, tenant, 2)
    got = await client.get(f"/api/notifications/{ids[1]}", headers=auth)
    assert msgspec.json.decode(await got.read())["priority"] == 4


async def test_template_with_recipients(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    tenant: NewTenant,
) -> None:
    start_worker(settings)
    batch = {
        "template": {"channel": "log", "payload": {"message": "sale starts"}, "priority": 3},
        "recipients": [f"user-{n}" for n in range(50)],
    }

    response = await client.post("/api/notifications/batch", json=batch, headers=auth)

    assert response.status == 202
    assert msgspec.json.decode(await response.read())["accepted"] == 50
    await wait_delivered(pool, tenant, 50)


async def test_batch_limits_and_all_invalid_are_problems(
    client: Client, auth: dict[str, str], settings: Settings, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    too_many = {"items": [EXAMPLE] * (settings.batch_max_items + 1)}
    response = await client.post("/api/notifications/batch", json=too_many, headers=auth)
    assert response.status == 422
    assert "at most" in msgspec.json.decode(await response.read())["detail"]

    none_valid = {"items": [EXAMPLE | {"channel": "pigeon"}]}
    response = await client.post("/api/notifications/batch", json=none_valid, headers=auth)
    problem = msgspec.json.decode(await response.read())
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert problem["errors"][0]["pointer"] == "/0/channel"

    both = {"items": [EXAMPLE], "template": {"channel": "log", "payload": {}}, "recipients": ["x"]}
    assert (await client.post("/api/notifications/batch", json=both, headers=auth)).status == 422
    assert (
        await pool.fetchval("SELECT count(*) FROM batches WHERE tenant_id = $1", tenant.tenant_id)
        == 0
    )


async def test_batch_items_keep_their_fallback_chains(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    tenant: NewTenant,
) -> None:
    step = {"channel": "log", "recipient": "ops", "payload": {"message": "mail failed"}}
    bad_step = step | {"payload": {}}
    items: list[Any] = [EXAMPLE | {"fallback": [step]}, EXAMPLE | {"fallback": [bad_step]}]

    response = await client.post("/api/notifications/batch", json={"items": items}, headers=auth)
    body = msgspec.json.decode(await response.read())
    start_worker(settings)
    await wait_delivered(pool, tenant, 1)
    got = await client.get(f"/api/notifications/{body['items'][0]['id']}", headers=auth)

    assert body["items"][1]["errors"][0]["pointer"] == "/1/fallback/0/payload/message"
    assert msgspec.json.decode(await got.read())["fallback"] == [step]
