"""Tenants, keys and scopes: who may do what, rotation and immediate revocation."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import EXAMPLE, Client

pytestmark = pytest.mark.integration


async def new_key(client: Client, auth: dict[str, str], *scopes: str) -> dict[str, str]:
    response = await client.post(
        "/api/keys", json={"name": "-".join(scopes), "scopes": list(scopes)}, headers=auth
    )
    assert response.status == 201, await response.text()
    return {"Authorization": f"Bearer {msgspec.json.decode(await response.read())['api_key']}"}


async def test_scopes_limit_what_a_key_may_do(client: Client, auth: dict[str, str]) -> None:
    sender = await new_key(client, auth, "send")
    reader = await new_key(client, auth, "read")

    sent = await client.post("/api/notifications/", json=EXAMPLE, headers=sender)
    assert sent.status == 202
    location = sent.headers["Location"]
    assert (await client.get(location, headers=sender)).status == 403
    assert (await client.get(location, headers=reader)).status == 200
    refused = await client.post("/api/notifications/", json=EXAMPLE, headers=reader)
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    assert (await client.post(f"{location}/cancel", headers=reader)).status == 403
    for path in ("/api/keys", "/api/dead-letters/replay"):
        assert (await client.post(path, json={}, headers=reader)).status == 403
    assert (await client.post("/api/dead-letters/replay", json={}, headers=sender)).status == 403


async def test_rotation_and_immediate_revocation(
    client: Client, auth: dict[str, str], tenant: NewTenant
) -> None:
    # Given a second key (rotation: both work at once)
    second = await new_key(client, auth, "send", "read")
    assert (await client.get("/api/notifications/", headers=second)).status == 200
    assert (await client.get("/api/notifications/", headers=auth)).status == 200

    # When it is revoked
    listing = msgspec.json.decode(await (await client.get("/api/keys", headers=auth)).read())
    second_id = next(k["id"] for k in listing["items"] if k["name"] == "send-read")
    assert all("key_hash" not in k and "api_key" not in k for k in listing["items"])
    assert (await client.delete(f"/api/keys/{second_id}", headers=auth)).status == 204

    # Then it stops working on the very next request; the first key still works
    assert (await client.get("/api/notifications/", headers=second)).status == 401
    assert (await client.get("/api/notifications/", headers=auth)).status == 200
    assert (await client.delete(f"/api/keys/{second_id}", headers=auth)).status == 404
    assert (await client.delete("/api/keys/not-a-uuid", headers=auth)).status == 404


async def test_keys_of_another_tenant_cannot_be_revoked(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    other = await TenantStore(pool).create("keys-other-" + auth["Authorization"][-6:])
    other_auth = {"Authorization": f"Bearer {other.api_key}"}
    other_keys = msgspec.json.decode(
        await (await client.get("/api/keys", headers=other_auth)).read()
    )
    other_key_id = other_keys["items"][0]["id"]

    assert (await client.delete(f"/api/keys/{other_key_id}", headers=auth)).status == 404
    assert (await client.get("/api/notifications/", headers=other_auth)).status == 200


async def test_only_an_operator_creates_tenants(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    body = {"name": "made-by-api-" + auth["Authorization"][-6:]}
    assert (await client.post("/api/tenants", json=body, headers=auth)).status == 403

    operator = await TenantStore(pool).create(
        "operator-" + auth["Authorization"][-6:], operator=True
    )
    op_auth = {"Authorization": f"Bearer {operator.api_key}"}
    created = await client.post("/api/tenants", json=body, headers=op_auth)
    assert created.status == 201
    new_key = msgspec.json.decode(await created.read())["api_key"]
    mine = {"Authorization": f"Bearer {new_key}"}
    assert (await client.post("/api/notifications/", json=EXAMPLE, headers=mine)).status == 202

    duplicate = await client.post("/api/tenants", json=body, headers=op_auth)
    assert duplicate.status == 422
    bad = await client.post("/api/keys", json={"name": "x", "scopes": ["root"]}, headers=auth)
    assert bad.status == 422
