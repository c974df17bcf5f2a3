"""The accept flow under outages and with keys: one service for single notifications and
batches; a key never stuck by an outage; channels the deployment cannot deliver refused at once.

PostgreSQL is stopped for real, through a TCP relay on loopback that the test cuts (every
connection dropped, new ones refused) and restores, as a PostgreSQL restart would look.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings, TwilioProvider
from pulse.http.app import create_app
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, Client

pytestmark = pytest.mark.integration


class CuttableRelay:
    """A TCP relay to PostgreSQL. Once a client sends ``cut_on``, the relay goes down: that
    bytes are never delivered, every connection is dropped and new ones are refused."""

    def __init__(self, target: tuple[str, int], cut_on: bytes) -> None:
        self.target = target
        self.cut_on: bytes | None = cut_on
        self.down = False
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def restore(self) -> None:
        self.down, self.cut_on = False, None

    async def close(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _cut(self) -> None:
        self.down = True
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, watch=True),
            self._pipe(up_reader, writer, watch=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if watch and self.cut_on is not None and self.cut_on in chunk:
                    self._cut()
                    return
                sink.write(chunk)
                await sink.drain()
        sink.transport.abort()


@contextlib.asynccontextmanager
async def through_relay(
    settings: Settings, cut_on: bytes
) -> AsyncIterator[tuple[CuttableRelay, Settings]]:
    """A relay to the test's PostgreSQL, and settings that reach it only through the relay."""
    parts = urlsplit(settings.require_database_url())
    relay = CuttableRelay((parts.hostname or "127.0.0.1", parts.port or 5432), cut_on)
    port = await relay.start()
    user = f"{parts.username}@" if parts.username else ""
    url = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
    try:
        yield relay, msgspec.structs.replace(settings, database_url=url)
    finally:
        await relay.close()


async def count_for(pool: asyncpg.Pool, tenant: NewTenant, table: str = "notifications") -> int:
    count: int = await pool.fetchval(
        f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant.tenant_id
    )
    return count


@pytest.mark.parametrize(
    "cut_on", [b"INSERT INTO notifications", b"COMMIT"], ids=["mid-insert", "at-commit"]
)
async def test_a_retry_after_postgresql_stopped_mid_request_is_processed_normally(
    settings: Settings, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant, cut_on: bytes
) -> None:
    async with through_relay(settings, cut_on) as (relay, relayed):
        app = create_app(relayed, channel_specs(relayed))
        async with TestClient(TestServer(app)) as client:
            headers = auth | {"Idempotency-Key": "outage-1"}
            # Given PostgreSQL stops in the middle of a keyed request
            first = await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
            assert relay.cuts == 1
            assert first.status == 503
            assert first.headers["Retry-After"]

            # When it is back and the client retries with the same key
            relay.restore()
            retry = await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
            document = msgspec.json.decode(await retry.read())

    # Then the retry is processed, once
    assert retry.status == 202, document
    assert await count_for(pool, tenant) == 1
    row = await pool.fetchrow("SELECT status FROM notifications WHERE id = $1", document["id"])
    assert row is not None
    assert row["status"] == "queued"


async def test_the_fingerprint_ignores_key_order_inside_the_payload(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "order-1", "Content-Type": "application/json"}
    first = (
        b'{"recipient": "someone@example.com", "channel": "email", "priority": 1,'
        b' "payload": {"subject": "Hello", "body": "Welcome", "headers": {"X-A": "1", "X-B": "2"}}}'
    )
    reordered = (
        b'{"payload": {"headers": {"X-B": "2", "X-A": "1"}, "body": "Welcome", "subject": "Hello"},'
        b' "priority": 1, "channel": "email", "recipient": "someone@example.com"}'
    )

    one = await client.post("/api/notifications/", data=first, headers=headers)
    two = await client.post("/api/notifications/", data=reordered, headers=headers)

    assert (one.status, two.status) == (202, 202), await two.text()
    assert await one.read() == await two.read()
    assert two.headers["Idempotent-Replayed"] == "true"
    assert await count_for(pool, tenant) == 1


async def test_a_batch_takes_an_idempotency_key(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "batch-1"}
    items: list[Any] = [EXAMPLE, EXAMPLE | {"recipient": "other@example.com"}]

    first = await client.post("/api/notifications/batch", json={"items": items}, headers=headers)
    again = await client.post("/api/notifications/batch", json={"items": items}, headers=headers)
    other = await client.post(
        "/api/notifications/batch", json={"items": items[:1]}, headers=headers
    )

    assert (first.status, again.status) == (202, 202)
    assert await first.read() == await again.read()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status == 422
    assert await count_for(pool, tenant, "batches") == 1


async def test_a_keyed_request_redis_refused_is_kept_and_its_retry_answered(
    settings: Settings, client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "redis-down-1"}
    down = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    async with TestClient(TestServer(create_app(down, channel_specs(down)))) as refused:
        first = await refused.post("/api/notifications/", json=EXAMPLE, headers=headers)
        problem = msgspec.json.decode(await first.read())

    retry = await client.post("/api/notifications/", json=EXAMPLE, headers=headers)

    assert first.status == 503
    assert "Idempotency-Key" in problem["detail"]
    assert retry.status == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert await count_for(pool, tenant) == 1  # committed once, for the reconciler to stream


SMS = {"recipient": "+15005550006", "channel": "sms", "payload": {"body": "Your code"}}
PUSH = {"recipient": "/topics/news", "channel": "push", "payload": {"title": "News"}}
WITH_SMS_FALLBACK = EXAMPLE | {
    "fallback": [{k: SMS[k] for k in ("channel", "recipient", "payload")}]
}
UNCONFIGURED = [
    (SMS, "PULSE_TWILIO_ACCOUNT_SID"),
    (SMS | {"channel": "whatsapp"}, "PULSE_TWILIO_ACCOUNT_SID"),
    (PUSH, "PULSE_FCM_SERVICE_ACCOUNT_FILE"),
    (WITH_SMS_FALLBACK, "PULSE_TWILIO_ACCOUNT_SID"),
]


@pytest.mark.parametrize(
    ("body", "variable"), UNCONFIGURED, ids=["sms", "whatsapp", "push", "fallback-step"]
)
async def test_a_channel_the_deployment_cannot_deliver_is_501_at_accept_time(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    tenant: NewTenant,
    body: dict[str, Any],
    variable: str,
) -> None:
    response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 501
    assert response.content_type == "application/problem+json"
    assert variable in msgspec.json.decode(await response.read())["detail"]
    assert await count_for(pool, tenant) == 0


async def test_batch_items_on_an_unconfigured_channel_are_refused_naming_the_variable(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    mixed = await client.post(
        "/api/notifications/batch", json={"items": [EXAMPLE, SMS]}, headers=auth
    )
    only_sms = await client.post("/api/notifications/batch", json={"items": [SMS]}, headers=auth)

    assert mixed.status == 202
    answer = msgspec.json.decode(await mixed.read())
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert "PULSE_TWILIO_ACCOUNT_SID" in answer["items"][1]["errors"][0]["detail"]
    assert only_sms.status == 501
    assert await count_for(pool, tenant, "batches") == 1


async def test_routes_show_only_configured_providers(client: Client, auth: dict[str, str]) -> None:
    listed = msgspec.json.decode(await (await client.get("/api/routes", headers=auth)).read())
    sms = await client.get("/api/routes/sms", headers=auth)

    providers = {provider["name"] for provider in listed["providers"]}
    assert "smtp" in providers
    assert not providers & {"twilio", "fcm"}
    assert not {route["channel"] for route in listed["routes"]} & {"sms", "whatsapp", "push"}
    assert sms.status == 501


async def test_a_named_provider_alone_makes_its_channels_deliverable(
    settings: Settings, auth: dict[str, str]
) -> None:
    named = msgspec.structs.replace(
        settings, providers={"acme": TwilioProvider(account_sid="AC1", auth_token="t")}
    )
    async with TestClient(TestServer(create_app(named, channel_specs(named)))) as client:
        accepted = await client.post("/api/notifications/", json=SMS, headers=auth)
        route = msgspec.json.decode(
            await (await client.get("/api/routes/sms", headers=auth)).read()
        )

    assert accepted.status == 202, await accepted.text()
    assert route["providers"] == ["acme"]
