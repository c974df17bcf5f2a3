"""Every endpoint that takes an id answers 404 to another tenant, and lists show only one's own."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import EXAMPLE, Client

pytestmark = pytest.mark.integration


@pytest.fixture
async def foreign(pool: asyncpg.Pool, tenant: NewTenant) -> dict[str, str]:
    other = await TenantStore(pool).create(f"isolation-{tenant.tenant_id[-8:]}")
    return {"Authorization": f"Bearer {other.api_key}"}


async def test_ids_of_another_tenant_are_404_everywhere(
    client: Client, auth: dict[str, str], foreign: dict[str, str], pool: asyncpg.Pool
) -> None:
    accepted = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    notification_id = msgspec.json.decode(await accepted.read())["id"]
    # a dead letter of ours, made directly in the store
    tenant_id = await pool.fetchval(
        "SELECT tenant_id FROM notifications WHERE id = $1", notification_id
    )
    dead_letter_id = await pool.fetchval(
        "INSERT INTO dead_letters (notification_id, tenant_id, channel, reason, stream, entry_id)"
        " VALUES ($1, $2, 'email', 'test', 's', $3) RETURNING id",
        notification_id,
        tenant_id,
        notification_id,
    )
    keys = msgspec.json.decode(await (await client.get("/api/keys", headers=auth)).read())
    key_id = keys["items"][0]["id"]

    calls = [
        ("GET", f"/api/notifications/{notification_id}"),
        ("GET", f"/api/notifications/{notification_id}/attempts"),
        ("POST", f"/api/notifications/{notification_id}/cancel"),
        ("GET", f"/api/dead-letters/{dead_letter_id}"),
        ("POST", f"/api/dead-letters/{dead_letter_id}/replay"),
        ("DELETE", f"/api/dead-letters/{dead_letter_id}"),
        ("DELETE", f"/api/keys/{key_id}"),
    ]
    for method, path in calls:
        response = await client.request(method, path, headers=foreign)
        assert response.status == 404, (method, path, response.status)
        assert response.content_type == "application/problem+json"

    # and nothing of ours changed
    status = await pool.fetchval("SELECT status FROM notifications WHERE id = $1", notification_id)
    assert status == "queued"
    assert (
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE id = $1", dead_letter_id) == 1
    )
    assert (await client.get("/api/keys", headers=auth)).status == 200

    for path in ("/api/notifications/", "/api/dead-letters"):
        listing = msgspec.json.decode(await (await client.get(path, headers=foreign)).read())
        assert listing["items"] == []
