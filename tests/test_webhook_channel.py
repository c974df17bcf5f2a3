"""The webhook channel: Standard Webhooks signatures, outcomes, the SSRF guard, end to end."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pulse.channels.registry import ENTRY_POINT_GROUP, plugins
from pulse.channels.webhook import WebhookChannel, WebhookConfig, WebhookPayload
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from pulse.core.signatures import webhook_signature
from tests.conftest import Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"pulse-test-webhook-secret-32byte").decode()


def test_signature_matches_the_published_standard_webhooks_vector() -> None:
    signature = webhook_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_channels_are_plugins_found_through_entry_points() -> None:
    from importlib.metadata import entry_points

    names = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    assert {"email", "log", "webhook"} <= names
    assert {"email", "log", "webhook"} <= set(plugins())


class Receiver:
    """A webhook receiver that verifies what it gets, and answers from a script."""

    def __init__(self, replies: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.replies = list(replies or [])
        self.received: list[dict[str, Any]] = []
        self.secret = SECRET

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        expected = webhook_signature(
            self.secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body
        )
        self.received.append(
            {"id": headers["webhook-id"], "valid": headers["webhook-signature"] == expected,
             "body": msgspec.json.decode(body)}
        )  # fmt: skip
        status, extra = self.replies.pop(0) if self.replies else (200, {})
        return web.Response(status=status, headers=extra, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield target, str(server.make_url("/hook"))


def envelope(url: str) -> Envelope:
    payload = WebhookPayload(type="order.shipped", data={"order": 42})
    return Envelope(str(uuid7()), str(uuid7()), url, payload, attempt=1)


async def send(config: WebhookConfig, url: str) -> Any:
    channel = WebhookChannel(config, secrets_for=lambda envelope: [SECRET])
    await channel.start()
    try:
        return await channel.send(envelope(url))
    finally:
        await channel.close()


LOCAL = WebhookConfig(allow_http=True, allow_private=True)


async def test_2xx_delivered_410_permanent_503_retried_with_retry_after(
    receiver: tuple[Receiver, str],
) -> None:
    target, url = receiver
    target.replies = [(200, {}), (410, {}), (503, {"Retry-After": "7"})]

    outcomes = [await send(LOCAL, url) for _ in range(3)]

    assert isinstance(outcomes[0], Delivered)
    assert isinstance(outcomes[1], Failed)
    assert isinstance(outcomes[2], Retry)
    assert outcomes[2].after_s == 7.0
    assert all(r["valid"] for r in target.received)
    assert target.received[0]["body"]["type"] == "order.shipped"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_ssrf_guard_refuses_inward_addresses(
    receiver: tuple[Receiver, str], host: str
) -> None:
    target, url = receiver
    guarded = WebhookConfig(allow_http=True, allow_private=False)

    outcome = await send(guarded, url.replace("127.0.0.1", host))

    assert isinstance(outcome, Failed)
    assert outcome.error_class == "SSRFGuard"
    assert target.received == []


async def test_nothing_is_sent_unsigned(receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    channel = WebhookChannel(LOCAL)  # no tenant secrets wired in
    await channel.start()
    try:
        outcome = await channel.send(envelope(url))
    finally:
        await channel.close()

    assert isinstance(outcome, Retry)
    assert outcome.error_class == "NotConfigured"
    assert target.received == []


async def test_webhook_end_to_end_through_the_api(
    settings: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
) -> None:
    from aiohttp.test_utils import TestClient

    from pulse.channels.registry import channel_specs
    from pulse.http.app import create_app

    target, url = receiver
    target.replies = [(503, {"Retry-After": "0"})]  # the first attempt fails, the retry lands
    local = msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True,
        worker_reclaim_interval_ms=50,
    )  # fmt: skip
    start_worker(local)
    body = {"recipient": url, "channel": "webhook",
            "payload": {"type": "order.shipped", "data": {"order": 42}}}  # fmt: skip
    client: Client
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        secret = await client.get("/api/webhooks/secret", headers=auth)
        target.secret = msgspec.json.decode(await secret.read())["secret"]
        response = await client.post("/api/notifications/", json=body, headers=auth)
        assert response.status == 202
        document = await wait_for_status(client, auth, response.headers["Location"], "delivered")
        strict = await client.post(
            "/api/notifications/", json=body | {"recipient": "http://x.example/"}, headers=auth
        )

    assert [r["id"] for r in target.received] == [document["id"]] * 2  # same webhook-id
    assert all(r["valid"] for r in target.received)
    assert strict.status == 202  # http allowed here by configuration
    await asyncio.sleep(0)


async def test_http_urls_are_refused_at_accept_time_by_default(
    client: Client, auth: dict[str, str]
) -> None:
    body = {"recipient": "http://hooks.example.com/x", "channel": "webhook",
            "payload": {"type": "t", "data": {}}}  # fmt: skip

    response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 422
    assert msgspec.json.decode(await response.read())["errors"][0]["pointer"] == "/recipient"


async def test_an_endless_answer_is_read_only_as_far_as_it_is_kept() -> None:
    # Given: an endpoint (the tenant's) that answers 200 with a body of up to 64 MiB
    chunk, limit, sent = b"x" * 65_536, 64 * 1024 * 1024, [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while sent[0] < limit:
                await response.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    app = web.Application()
    app.router.add_post("/hook", endless)
    async with TestServer(app, host="127.0.0.1") as server:
        # When: Pulse delivers to it
        outcome = await send(LOCAL, str(server.make_url("/hook")))

    # Then: delivered, with only the head of the answer kept, and the rest never read
    assert isinstance(outcome, Delivered)
    assert outcome.response is not None
    assert outcome.response.endswith("x" * 100)
    assert len(outcome.response) <= 520
    assert sent[0] < limit
