"""Webhooks cannot be forged: each tenant signs with its own secret (readable and rotatable by
its admin key, two signatures during a rotation's overlap), never with an empty key; and a
webhook's body is the same on every retry (the event time in the body, the attempt time only in
``webhook-timestamp``). A loopback receiver verifies each delivery as Standard Webhooks says."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import build_channels, channel_specs
from pulse.config import Settings
from pulse.core.errors import ConfigError
from pulse.http.app import create_app
from pulse.store.tenants import TenantStore
from tests.conftest import Client, WorkerFactory, wait_for_status
from tests.test_keys_and_scopes import new_key

pytestmark = pytest.mark.integration


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A Standard Webhooks consumer's check: any ``v1,`` signature of ``id.timestamp.body``
    under the base64 key after ``whsec_``; an empty key proves nothing, so it never passes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    if not key:
        return False
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers["webhook-signature"].split(" ")]
    return any(hmac.compare_digest(expected, signature) for signature in given)


@dataclass
class Receiver:
    """Records every delivery; answers 503 to the first try of each message when asked to."""

    fail_first: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append((headers, await request.read()))
        tries = sum(1 for h, _ in self.received if h["webhook-id"] == headers["webhook-id"])
        if self.fail_first and tries == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield target, str(server.make_url("/hook"))


@pytest.fixture
def local(settings: Settings) -> Settings:
    """The receiver is on loopback over http: allowed here, refused by default."""
    return msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True, retry_base_s=0.05,
        worker_reclaim_interval_ms=50,
    )  # fmt: skip


async def call(client: Client, method: str, path: str, auth: dict[str, str]) -> Any:
    response = await client.request(method, path, headers=auth)
    return response.status, msgspec.json.decode(await response.read())


def hook(url: str) -> dict[str, Any]:
    return {"recipient": url, "channel": "webhook",
            "payload": {"type": "order.shipped", "data": {"order": 42}}}  # fmt: skip


async def test_each_tenant_signs_its_webhooks_with_its_own_secret(
    local: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
    pool: asyncpg.Pool,
) -> None:
    target, url = receiver
    other = await TenantStore(pool).create(f"webhooks-{secrets.token_hex(4)}")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given: two tenants, each reading its webhook secret
        status, mine = await call(client, "GET", "/api/webhooks/secret", auth)
        _, theirs = await call(client, "GET", "/api/webhooks/secret", other_auth)
        # When: each sends a webhook to the same receiver
        for headers in (auth, other_auth):
            sent = await client.post("/api/notifications/", json=hook(url), headers=headers)
            await wait_for_status(client, headers, sent.headers["Location"], "delivered")

    # Then: each delivery verifies with its tenant's secret only
    assert status == 200
    assert mine["secret"].startswith("whsec_")
    assert mine["secret"] != theirs["secret"]
    [(my_headers, my_body), (their_headers, their_body)] = target.received
    assert verify(mine["secret"], my_headers, my_body)
    assert not verify(theirs["secret"], my_headers, my_body)
    assert verify(theirs["secret"], their_headers, their_body)
    assert not verify(mine["secret"], their_headers, their_body)
    assert not verify("whsec_", my_headers, my_body)


async def test_a_rotated_secret_signs_alongside_the_previous_one_for_a_day(
    local: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
) -> None:
    target, url = receiver
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        _, before = await call(client, "GET", "/api/webhooks/secret", auth)
        status, rotated = await call(client, "POST", "/api/webhooks/secret/rotate", auth)
        _, after = await call(client, "GET", "/api/webhooks/secret", auth)
        start_worker(local)  # a worker loads tenants' generations before it delivers anything
        sent = await client.post("/api/notifications/", json=hook(url), headers=auth)
        await wait_for_status(client, auth, sent.headers["Location"], "delivered")

    [(headers, body)] = target.received
    assert status == 200
    assert rotated == after
    assert rotated["secret"] != before["secret"]
    assert rotated["previous_secret"] == before["secret"]
    assert before["previous_secret"] is None
    assert rotated["previous_secret_until"] is not None
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(rotated["secret"], headers, body)
    assert verify(before["secret"], headers, body)


async def test_webhook_secrets_need_an_admin_key(client: Client, auth: dict[str, str]) -> None:
    sender = await new_key(client, auth, "send", "read")

    reads = await client.get("/api/webhooks/secret", headers=sender)
    rotates = await client.post("/api/webhooks/secret/rotate", headers=sender)
    anonymous = await client.get("/api/webhooks/secret")

    assert (reads.status, rotates.status, anonymous.status) == (403, 403, 401)


async def test_without_a_signing_key_webhook_secrets_say_what_is_missing(
    settings: Settings, auth: dict[str, str]
) -> None:
    bare = msgspec.structs.replace(settings, receipt_signing_key=None)
    async with TestClient(TestServer(create_app(bare, channel_specs(bare)))) as client:
        status, problem = await call(client, "GET", "/api/webhooks/secret", auth)

    assert status == 501
    assert "PULSE_RECEIPT_SIGNING_KEY" in problem["detail"]


@pytest.mark.parametrize("value", ["whsec_", "whsec_c2hhcmVk"])
def test_a_shared_or_empty_webhook_secret_is_refused_at_start_up(value: str) -> None:
    settings = Settings(webhook_secret=value, receipt_signing_key="k" * 32)

    with pytest.raises(ConfigError, match="PULSE_WEBHOOK_SECRET"):
        channel_specs(settings)  # what the API builds at start-up
    with pytest.raises(ConfigError, match="PULSE_WEBHOOK_SECRET"):
        build_channels(settings)  # what a worker builds at start-up


def id_seconds(notification_id: str) -> int:
    """The acceptance time a UUIDv7 id carries (its first 48 bits: Unix milliseconds)."""
    return (uuid.UUID(notification_id).int >> 80) // 1000


async def test_a_retried_webhook_carries_the_same_body_with_the_event_time(
    local: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
) -> None:
    target, url = receiver
    target.fail_first = True
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        sent = await client.post("/api/notifications/", json=hook(url), headers=auth)
        document = await wait_for_status(client, auth, sent.headers["Location"], "delivered")

    [(first_headers, first), (second_headers, second)] = target.received
    assert first == second  # one webhook-id, one body
    assert first_headers["webhook-id"] == second_headers["webhook-id"] == document["id"]
    assert msgspec.json.decode(first)["timestamp"] == id_seconds(str(document["id"]))


async def test_the_body_keeps_the_event_time_however_late_the_attempt(
    receiver: tuple[Receiver, str],
) -> None:
    from pulse.channels.webhook import WebhookChannel, WebhookConfig, WebhookPayload
    from pulse.core.ids import uuid7
    from pulse.core.ports import Delivered, Envelope

    target, url = receiver
    accepted_ms = (int(time.time()) - 3600) * 1000  # accepted an hour ago, delivered now
    notification_id = str(uuid7(accepted_ms))
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    channel = WebhookChannel(
        WebhookConfig(allow_http=True, allow_private=True), secrets_for=lambda e: [secret]
    )
    await channel.start()
    payload = WebhookPayload(type="order.shipped", data={"order": 42})
    try:
        outcome = await channel.send(Envelope(notification_id, str(uuid7()), url, payload, 3))
    finally:
        await channel.close()

    [(headers, body)] = target.received
    assert isinstance(outcome, Delivered)
    assert msgspec.json.decode(body)["timestamp"] == accepted_ms // 1000
    assert int(headers["webhook-timestamp"]) >= accepted_ms // 1000 + 3600


async def test_a_second_rotation_within_the_overlap_is_refused(
    local: Settings, auth: dict[str, str]
) -> None:
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given: a secret receivers use, rotated once
        _, original = await call(client, "GET", "/api/webhooks/secret", auth)
        first, _ = await call(client, "POST", "/api/webhooks/secret/rotate", auth)

        # When: it is rotated again (a retried request, a double click) within the day
        again = await client.post("/api/webhooks/secret/rotate", headers=auth)
        _, after = await call(client, "GET", "/api/webhooks/secret", auth)

    # Then: 409 with when to try again, and the original secret still signs
    assert first == 200
    assert again.status == 409
    assert 0 < int(again.headers["Retry-After"]) <= 24 * 3600
    assert after["previous_secret"] == original["secret"]
