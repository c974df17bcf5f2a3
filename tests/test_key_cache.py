"""API keys cached in each API process, revocation immediate in all of them: two API apps share
Redis and PostgreSQL; a key revoked through one is refused by the other on the very next
request (the revocation is answered only once every process confirmed it emptied its cache)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.http.state import TENANTS
from pulse.metrics import Metrics
from pulse.store.tenants import SCOPES, NewTenant, TenantStore
from tests.conftest import Client

pytestmark = pytest.mark.integration

SUBSCRIBED_WITHIN_S = 10.0
POLL_S = 0.01


async def _caching(client: Client) -> None:
    """Until the app's revocation subscription is confirmed (a wait, not an assertion)."""
    assert client.app is not None
    tenants = client.app[TENANTS]
    for _ in range(int(SUBSCRIBED_WITHIN_S / POLL_S)):
        if tenants.caching:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError("the API never subscribed to key revocations")


@pytest.fixture
async def two_apps(settings: Settings) -> AsyncIterator[tuple[Client, Client]]:
    """Two API processes' apps on the same Redis, PostgreSQL and key prefix."""
    first = TestClient(TestServer(create_app(settings, channel_specs(settings), Metrics())))
    second = TestClient(TestServer(create_app(settings, channel_specs(settings), Metrics())))
    async with first, second:
        await _caching(first)
        await _caching(second)
        yield first, second


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_revoked_through_one_api_is_refused_at_once_by_the_other(
    two_apps: tuple[Client, Client], tenant: NewTenant, pool: asyncpg.Pool
) -> None:
    # Given a key, and a spare one, both used on both APIs
    one, other = two_apps
    store = TenantStore(pool)
    key_id, key = await store.add_key(tenant.tenant_id, SCOPES, "rotating")
    spare_id, spare = await store.add_key(tenant.tenant_id, SCOPES, "spare")
    for api in (one, other):
        for used in (key, spare):
            assert (await api.get("/api/keys", headers=_bearer(used))).status == 200
    # (the other API answers from memory: a revocation made behind Pulse's back goes unseen)
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", spare_id)
    assert (await other.get("/api/keys", headers=_bearer(spare))).status == 200
    # When the key is revoked through the first API
    revoked = await one.delete(f"/api/keys/{key_id}", headers=_bearer(tenant.api_key))
    assert revoked.status == 204
    # Then the very next request with it is refused by the other API, and by the first
    assert (await other.get("/api/keys", headers=_bearer(key))).status == 401
    assert (await one.get("/api/keys", headers=_bearer(key))).status == 401
    # and every cache was emptied: the spare key's revocation is now seen too
    assert (await other.get("/api/keys", headers=_bearer(spare))).status == 401
    # while the tenant's other key still works on both
    for api in (one, other):
        assert (await api.get("/api/keys", headers=_bearer(tenant.api_key))).status == 200
