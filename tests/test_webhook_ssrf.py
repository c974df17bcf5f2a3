"""Webhooks and receipts cannot be turned inward: redirects are the endpoint's answer (never
followed), and inward IP literals are refused at accept time. Every server here is on loopback;
addresses that are not are only ever handed to the guard, never connected to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.guard import GuardedResolver, RefusedAddress
from pulse.channels.registry import channel_specs
from pulse.channels.webhook import WebhookChannel, WebhookConfig, WebhookPayload
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.ports import Envelope, Failed, Retry
from pulse.http.app import create_app
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration

INWARD_SECRET = "inward-metadata-token-7f3a"


@dataclass
class Inward:
    """Stands for an inward service (a cloud metadata endpoint): it must never be reached."""

    hits: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(text=INWARD_SECRET)


@dataclass
class Sites:
    inward: Inward
    inward_url: str
    public: str  # base URL of the "public" endpoint that redirects


@pytest.fixture
async def sites() -> AsyncIterator[Sites]:
    inward = Inward()
    inner = web.Application()
    inner.router.add_route("*", "/{tail:.*}", inward.handle)

    async def redirect(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"Location": inward_url + "/latest/meta-data"})

    outer = web.Application()
    outer.router.add_route("*", "/redirect/{code}", redirect)
    async with (
        TestServer(inner, host="127.0.0.1") as inner_server,
        TestServer(outer, host="127.0.0.1") as outer_server,
    ):
        inward_url = str(inner_server.make_url("")).rstrip("/")
        yield Sites(inward, inward_url, str(outer_server.make_url("")).rstrip("/"))


SECRET = "whsec_" + "cHVsc2UtdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU="


def signed(envelope: Envelope) -> list[str]:
    return [SECRET]


# The endpoints are on loopback, so the address guard is off here: what stops the inward hop
# is that redirects are not followed at all.
LOCAL = WebhookConfig(allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    ("code", "outcome"), [(301, Failed), (302, Retry), (303, Retry), (307, Retry), (308, Failed)]
)
async def test_a_redirect_is_the_endpoints_answer_and_is_not_followed(
    sites: Sites, code: int, outcome: type
) -> None:
    channel = WebhookChannel(LOCAL, secrets_for=signed)
    await channel.start()
    payload = WebhookPayload(type="order.shipped", data={"order": 42})
    try:
        result = await channel.send(
            Envelope(str(uuid7()), str(uuid7()), f"{sites.public}/redirect/{code}", payload, 1)
        )
    finally:
        await channel.close()

    assert sites.inward.hits == []
    assert isinstance(result, (Failed, Retry))
    assert isinstance(result, outcome)
    assert result.error_class == f"HTTP{code}"
    assert "redirect" in result.error
    assert INWARD_SECRET not in msgspec.json.encode(result).decode()


async def attempts_text(client: Client, auth: dict[str, str], notification_id: str) -> str:
    response = await client.get(f"/api/notifications/{notification_id}/attempts", headers=auth)
    return (await response.read()).decode()


@pytest.fixture
def local(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True, receipt_max_attempts=1
    )


async def test_a_webhook_redirected_inward_shows_nothing_of_the_inward_answer(
    local: Settings, start_worker: WorkerFactory, sites: Sites, auth: dict[str, str]
) -> None:
    start_worker(local)
    body = {"recipient": f"{sites.public}/redirect/307", "channel": "webhook", "max_attempts": 1,
            "payload": {"type": "order.shipped", "data": {"order": 42}}}  # fmt: skip
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        accepted = await client.post("/api/notifications/", json=body, headers=auth)
        document = await wait_for_status(client, auth, accepted.headers["Location"], "failed")
        attempts = await attempts_text(client, auth, str(document["id"]))

    assert sites.inward.hits == []
    assert "HTTP307" in attempts
    assert INWARD_SECRET not in attempts


async def test_a_receipt_redirected_inward_shows_nothing_of_the_inward_answer(
    local: Settings, start_worker: WorkerFactory, sites: Sites, auth: dict[str, str]
) -> None:
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        put = await client.put(
            "/api/receipts", json={"url": f"{sites.public}/redirect/302"}, headers=auth
        )
        sent = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        delivered = await wait_for_status(client, auth, sent.headers["Location"], "delivered")
        receipt = await _receipt_of(client, auth, str(delivered["id"]))
        await wait_for_status(client, auth, f"/api/notifications/{receipt}", "failed")
        attempts = await attempts_text(client, auth, receipt)

    assert put.status == 200
    assert sites.inward.hits == []
    assert "HTTP302" in attempts
    assert INWARD_SECRET not in attempts


async def _receipt_of(client: Client, auth: dict[str, str], notification_id: str) -> str:
    for _ in range(600):
        listed = await client.get("/api/notifications/?channel=receipt", headers=auth)
        items = msgspec.json.decode(await listed.read())["items"]
        found = [item["id"] for item in items if item["receipt_for"] == notification_id]
        if found:
            return str(found[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no receipt of {notification_id}")


# Inward and non-global addresses written as IP literals, in every form that reaches them:
# IPv4-mapped IPv6, NAT64 embedding a non-global IPv4, 6to4 embedding one, Teredo.
INWARD_LITERALS = [
    "127.0.0.1",
    "[::1]",
    "10.1.2.3",
    "100.64.0.1",  # shared address space (carrier-grade NAT; some clouds' metadata)
    "169.254.169.254",
    "192.0.0.8",
    "198.18.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "[::ffff:169.254.169.254]",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b::7f00:1]",
    "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[fd00::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::]",
]


@pytest.mark.parametrize("host", INWARD_LITERALS)
async def test_inward_ip_literal_recipients_are_refused_at_accept_time(
    client: Client, auth: dict[str, str], host: str
) -> None:
    body = {"recipient": f"https://{host}/hook", "channel": "webhook",
            "payload": {"type": "t", "data": {}}}  # fmt: skip

    response = await client.post("/api/notifications/", json=body, headers=auth)
    problem: dict[str, Any] = msgspec.json.decode(await response.read())

    assert response.status == 422
    assert problem["errors"][0]["pointer"] == "/recipient"


async def test_an_inward_fallback_recipient_is_refused_at_accept_time(
    client: Client, auth: dict[str, str]
) -> None:
    body = EXAMPLE | {"fallback": [{"channel": "webhook", "recipient": "https://100.64.0.9/h",
                                    "payload": {"type": "t", "data": {}}}]}  # fmt: skip

    response = await client.post("/api/notifications/", json=body, headers=auth)
    problem: dict[str, Any] = msgspec.json.decode(await response.read())

    assert response.status == 422
    assert problem["errors"][0]["pointer"] == "/fallback/0/recipient"


@pytest.mark.parametrize("host", ["169.254.169.254", "[::ffff:10.0.0.1]", "100.100.100.200"])
async def test_inward_receipt_urls_are_refused_at_accept_time(
    client: Client, auth: dict[str, str], host: str
) -> None:
    response = await client.put("/api/receipts", json={"url": f"https://{host}/r"}, headers=auth)
    problem: dict[str, Any] = msgspec.json.decode(await response.read())

    assert response.status == 422
    assert problem["errors"][0]["pointer"] == "/url"


async def test_loopback_literals_are_accepted_where_configuration_allows_them(
    local: Settings, auth: dict[str, str]
) -> None:
    body = {"recipient": "http://127.0.0.1:9/hook", "channel": "webhook",
            "payload": {"type": "t", "data": {}}}  # fmt: skip
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 202


async def test_a_name_resolving_to_loopback_is_refused_before_any_connection() -> None:
    guarded = WebhookConfig(allow_http=True, allow_private=False)
    channel = WebhookChannel(guarded, secrets_for=signed)
    await channel.start()
    payload = WebhookPayload(type="t", data={})
    try:
        result = await channel.send(
            Envelope(str(uuid7()), str(uuid7()), "http://localhost:9/hook", payload, 1)
        )
    finally:
        await channel.close()

    assert isinstance(result, Failed)
    assert result.error_class == "SSRFGuard"


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(RefusedAddress) as refused:
            await resolver.resolve("localhost", 443, socket.AF_UNSPEC)
        # the tenant learns that the name is refused, not what it resolves to
        assert "public" in str(refused.value)
        assert "127.0.0.1" not in str(refused.value)
        assert "::1" not in str(refused.value)
    finally:
        await resolver.close()
