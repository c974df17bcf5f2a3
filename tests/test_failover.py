"""Provider failover end to end: two real SMTP relays, a tenant's route, circuit breakers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings, SmtpProvider
from pulse.http.app import create_app
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, Client, RunningWorker, WorkerFactory, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration


def failover_settings(settings: Settings, primary: ScriptedSmtp, backup: ScriptedSmtp) -> Settings:
    """``smtp`` (the default provider) on ``primary``, a named ``relay2`` on ``backup``."""
    relay2 = SmtpProvider(host="127.0.0.1", port=backup.port, tls="none", timeout_s=5)
    return msgspec.structs.replace(
        settings,
        smtp_port=primary.port,
        providers={"relay2": relay2},
        breaker_failures=2,
        breaker_cooldown_s=3.0,  # long enough that it stays open while the test looks
    )


@pytest.fixture
async def relays() -> AsyncIterator[tuple[ScriptedSmtp, ScriptedSmtp]]:
    """Two relays; the primary is not started: connections to it are refused until it is."""
    primary, backup = ScriptedSmtp(ScriptedHandler()), ScriptedSmtp(ScriptedHandler())
    with backup:
        try:
            yield primary, backup
        finally:
            primary.stop()


def circuit_state(worker: RunningWorker, provider: str) -> float:
    text = worker.worker.metrics.exposition().decode()
    found = re.search(rf'pulse_provider_circuit_state{{provider="{provider}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


async def send_and_wait(client: Client, auth: dict[str, str]) -> dict[str, object]:
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    assert response.status == 202
    location = response.headers["Location"]
    document = await wait_for_status(client, auth, location, "delivered")
    attempts = await client.get(location + "/attempts", headers=auth)
    document["attempt_rows"] = msgspec.json.decode(await attempts.read())["attempts"]
    return document


def calls(document: dict[str, object]) -> list[tuple[object, object]]:
    rows = document["attempt_rows"]
    assert isinstance(rows, list)
    return [(row["provider"], row["outcome"]) for row in rows]


async def test_the_backup_delivers_while_the_primary_is_down_and_the_breaker_recovers(
    settings: Settings,
    start_worker: WorkerFactory,
    relays: tuple[ScriptedSmtp, ScriptedSmtp],
    auth: dict[str, str],
) -> None:
    primary, backup = relays
    local = failover_settings(settings, primary, backup)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given: the tenant routes email to smtp first, relay2 second; smtp is down
        route = {"providers": ["smtp", "relay2"]}
        put = await client.put("/api/routes/email", json=route, headers=auth)
        worker = start_worker(local)

        # When: notifications are sent while smtp refuses connections
        first = await send_and_wait(client, auth)
        second = await send_and_wait(client, auth)
        opened = circuit_state(worker, "smtp")
        third = await send_and_wait(client, auth)

        # and smtp comes back, after the cool-down
        primary.start()
        for _ in range(200):
            if circuit_state(worker, "smtp") == 1:  # half-open: the next call is a probe
                break
            await asyncio.sleep(0.05)
        fourth = await send_and_wait(client, auth)

    # Then: relay2 delivered the first three, smtp's breaker opened after two failures and
    # took no traffic while open; its probe delivered the fourth and closed it again
    assert put.status == 200
    assert calls(first) == [("smtp", "retry"), ("relay2", "delivered")]
    assert calls(second) == [("smtp", "retry"), ("relay2", "delivered")]
    assert opened == 2
    assert calls(third) == [("relay2", "delivered")]
    assert [first["provider"], second["provider"], third["provider"]] == ["relay2"] * 3
    assert calls(fourth) == [("smtp", "delivered")]
    assert fourth["provider"] == "smtp"
    assert circuit_state(worker, "smtp") == 0
    assert sum(backup.handler.accepted.values()) == 3
    assert sum(primary.handler.accepted.values()) == 1
    text = worker.worker.metrics.exposition().decode()
    assert 'pulse_provider_circuit_opened_total{provider="smtp"} 1.0' in text


async def test_without_a_route_the_default_provider_alone_is_used(
    settings: Settings,
    start_worker: WorkerFactory,
    relays: tuple[ScriptedSmtp, ScriptedSmtp],
    auth: dict[str, str],
) -> None:
    primary, backup = relays
    primary.start()
    local = failover_settings(settings, primary, backup)
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        document = await send_and_wait(client, auth)

    assert calls(document) == [("smtp", "delivered")]
    assert sum(backup.handler.accepted.values()) == 0


async def test_routes_api(
    settings: Settings, relays: tuple[ScriptedSmtp, ScriptedSmtp], auth: dict[str, str]
) -> None:
    primary, backup = relays
    local = failover_settings(settings, primary, backup)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as api:

        async def call(method: str, path: str, body: object = None) -> tuple[int, Any]:
            response = await api.request(method, path, json=body, headers=auth)
            data = await response.read()
            return response.status, msgspec.json.decode(data) if data else None

        _, listed = await call("GET", "/api/routes")
        unknown = await call("PUT", "/api/routes/email", {"providers": ["relay2", "relay9"]})
        wrong_kind = await call("PUT", "/api/routes/email", {"providers": ["twilio"]})
        no_channel = await call("PUT", "/api/routes/fax", {"providers": ["smtp"]})
        put = await call("PUT", "/api/routes/email", {"providers": ["relay2"]})
        _, got = await call("GET", "/api/routes/email")
        deleted, again = (
            await call("DELETE", "/api/routes/email"),
            await call("DELETE", "/api/routes/email"),
        )
        _, after = await call("GET", "/api/routes/email")

    email = next(route for route in listed["routes"] if route["channel"] == "email")
    assert email == {"channel": "email", "providers": ["smtp"], "source": "default",
                     "updated_at": None}  # fmt: skip
    assert {"name": "relay2", "channels": ["email"]} in listed["providers"]
    assert unknown[0] == 422
    assert unknown[1]["errors"][0]["pointer"] == "/providers/1"
    assert "relay9" in unknown[1]["detail"]
    assert wrong_kind[0] == 422
    assert no_channel[0] == 404
    assert put[0] == 200
    assert (got["providers"], got["source"]) == (["relay2"], "tenant")
    assert (deleted[0], again[0]) == (204, 404)
    assert (after["providers"], after["source"]) == (["smtp"], "default")


async def test_only_admins_change_routes(
    settings: Settings, client: Client, tenant: NewTenant, auth: dict[str, str]
) -> None:
    created = await client.post(
        "/api/keys", json={"name": "reader", "scopes": ["read"]}, headers=auth
    )
    reader = {"Authorization": "Bearer " + msgspec.json.decode(await created.read())["api_key"]}

    looked = await client.get("/api/routes", headers=reader)
    changed = await client.put("/api/routes/email", json={"providers": ["smtp"]}, headers=reader)

    assert looked.status == 200
    assert changed.status == 403
