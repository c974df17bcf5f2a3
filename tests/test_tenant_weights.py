"""Tenants' weights through the operator API (``/api/tenants/{id}/weight``)."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from pulse.store.tenant_weights import TenantWeights
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import Client

pytestmark = pytest.mark.integration


@pytest.fixture
async def operator(pool: asyncpg.Pool) -> dict[str, str]:
    admin = await TenantStore(pool).create(f"op-{secrets.token_hex(4)}", operator=True)
    return {"Authorization": f"Bearer {admin.api_key}"}


async def test_an_operator_sets_and_reads_a_tenants_weight(
    client: Client, operator: dict[str, str], tenant: NewTenant, pool: asyncpg.Pool
) -> None:
    url = f"/api/tenants/{tenant.tenant_id}/weight"
    # Given a new tenant: weight 1, like every other
    response = await client.get(url, headers=operator)
    assert response.status == 200
    assert await response.json() == {"tenant_id": tenant.tenant_id, "weight": 1}
    # When the operator sets 3
    response = await client.put(url, json={"weight": 3}, headers=operator)
    assert response.status == 200
    assert (await response.json())["weight"] == 3
    # Then it is in force, and the workers see it among the weights that differ from 1
    assert (await (await client.get(url, headers=operator)).json())["weight"] == 3
    assert (await TenantWeights(pool).differing())[tenant.tenant_id] == 3


async def test_bad_weights_are_422_with_the_field_and_only_operators_set_them(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    url = f"/api/tenants/{tenant.tenant_id}/weight"
    for bad in (0, 1001, "2", None):
        response = await client.put(url, json={"weight": bad}, headers=operator)
        assert response.status == 422
        assert response.content_type == "application/problem+json"
        assert "weight" in await response.text()
    assert (await client.put(url, json={"weight": 2}, headers=auth)).status == 403
    missing = f"/api/tenants/{secrets.token_hex(16)}/weight"
    assert (await client.put(missing, json={"weight": 2}, headers=operator)).status == 404
