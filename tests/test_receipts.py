"""Delivery receipts: a signed Standard Webhooks POST to the tenant when a notification ends,
itself a queued delivery with retries. Checked by a local receiver that verifies signatures the
way the specification says a consumer must."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """Records every POST; ``/receipts`` fails the first try of each message with a 503."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    tries: dict[str, int] = field(default_factory=dict)

    async def receipts(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        message = headers.get("webhook-id", "")
        self.tries[message] = self.tries.get(message, 0) + 1
        if self.tries[message] == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.received.append((headers, body))
        return web.Response(status=204)

    async def gone(self, request: web.Request) -> web.Response:
        return web.Response(status=410, text="this hook is gone")

    async def wait_for(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        for _ in range(600):
            if len(self.received) >= count:
                return self.received
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {len(self.received)} receipts arrived")


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A Standard Webhooks consumer's check: any v1 signature matching HMAC-SHA256 of
    ``id.timestamp.body`` under the base64 key after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers["webhook-signature"].split(" ")]
    return any(hmac.compare_digest(expected, signature) for signature in given)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    fake = Receiver()
    app = web.Application()
    app.router.add_post("/receipts", fake.receipts)
    app.router.add_post("/gone", fake.gone)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
def local(settings: Settings) -> Settings:
    """The receiver is on loopback over http: allowed here, refused by default."""
    return msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True, retry_base_s=0.05
    )


async def call(
    client: Client, method: str, path: str, auth: dict[str, str], body: Any = None
) -> Any:
    response = await client.request(method, path, json=body, headers=auth)
    data = await response.read()
    return response.status, (msgspec.json.decode(data) if data else None)


async def test_delivered_and_failed_notifications_are_reported_signed(
    local: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
) -> None:
    fake, base = receiver
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given: the tenant's receipt endpoint
        status, endpoint = await call(
            client, "PUT", "/api/receipts", auth, {"url": f"{base}/receipts"}
        )
        # When: one notification is delivered and one fails for good (its hook answers 410)
        sent = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        doomed_body = {"recipient": f"{base}/gone", "channel": "webhook",
                       "payload": {"type": "order.shipped", "data": {"order": 42}}}  # fmt: skip
        doomed = await client.post("/api/notifications/", json=doomed_body, headers=auth)
        delivered = await wait_for_status(client, auth, sent.headers["Location"], "delivered")
        failed = await wait_for_status(client, auth, doomed.headers["Location"], "failed")
        arrived = await fake.wait_for(2)
        _, listed = await call(client, "GET", "/api/notifications/", auth)
        _, receipts = await call(client, "GET", "/api/notifications/?channel=receipt", auth)

    # Then: both are reported, signed with the tenant's secret, each after one retry
    assert status == 200
    assert endpoint["secret"].startswith("whsec_")
    events = {msgspec.json.decode(body)["data"]["id"]: (headers, body) for headers, body in arrived}
    headers, body = events[delivered["id"]]
    event = msgspec.json.decode(body)
    assert verify(endpoint["secret"], headers, body)
    assert event["type"] == "notification.delivered"
    assert event["data"]["status"] == "delivered"
    assert (event["data"]["channel"], event["data"]["provider"]) == ("email", "smtp")
    assert event["data"]["recipient"] == EXAMPLE["recipient"]
    headers, body = events[failed["id"]]
    event = msgspec.json.decode(body)
    assert verify(endpoint["secret"], headers, body)
    assert event["type"] == "notification.failed"
    assert "410" in event["data"]["error"]
    assert sorted(fake.tries.values()) == [
        2,
        2,
    ]  # one 503 each, then delivered; no receipt of a receipt
    assert receipts is not None
    assert {r["receipt_for"] for r in receipts["items"]} >= {delivered["id"], failed["id"]}
    assert all(r["channel"] != "receipt" for r in listed["items"])  # not in the default list


async def test_a_rotated_secret_signs_alongside_the_previous_one(
    local: Settings,
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],
    auth: dict[str, str],
) -> None:
    fake, base = receiver
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        _, before = await call(
            client,
            "PUT",
            "/api/receipts",
            auth,
            {"url": f"{base}/receipts", "events": ["delivered"]},
        )
        status, rotated = await call(client, "POST", "/api/receipts/rotate", auth)
        start_worker(local)  # a worker loads tenants' settings before it delivers anything
        sent = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        await wait_for_status(client, auth, sent.headers["Location"], "delivered")
        [(headers, body)] = await fake.wait_for(1)

    assert status == 200
    assert rotated["secret"] != before["secret"]
    assert rotated["previous_secret"] == before["secret"]
    assert rotated["previous_secret_until"] is not None
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(rotated["secret"], headers, body)
    assert verify(before["secret"], headers, body)


async def test_receipt_endpoint_api(
    client: Client, auth: dict[str, str], settings: Settings
) -> None:
    missing = await call(client, "GET", "/api/receipts", auth)
    not_https = await call(client, "PUT", "/api/receipts", auth, {"url": "http://example.com/r"})
    bad_event = await call(
        client, "PUT", "/api/receipts", auth, {"url": "https://example.com/r", "events": ["opened"]}
    )
    put = await call(client, "PUT", "/api/receipts", auth, {"url": "https://example.com/r"})
    got = await call(client, "GET", "/api/receipts", auth)
    deleted = await call(client, "DELETE", "/api/receipts", auth)
    gone = await call(client, "GET", "/api/receipts", auth)

    assert missing[0] == 404
    assert not_https[0] == 422
    assert not_https[1]["errors"][0]["pointer"] == "/url"
    assert bad_event[0] == 422
    assert bad_event[1]["errors"][0]["pointer"] == "/events/0"
    assert put[0] == 200
    assert put[1]["events"] == ["delivered", "failed"]
    assert got[1]["secret"] == put[1]["secret"]
    assert (deleted[0], gone[0]) == (204, 404)


async def test_without_a_signing_key_receipts_say_what_is_missing(
    settings: Settings, auth: dict[str, str]
) -> None:
    bare = msgspec.structs.replace(settings, receipt_signing_key=None)
    async with TestClient(TestServer(create_app(bare, channel_specs(bare)))) as client:
        status, problem = await call(
            client, "PUT", "/api/receipts", auth, {"url": "https://example.com/r"}
        )

    assert status == 501
    assert "PULSE_RECEIPT_SIGNING_KEY" in problem["detail"]


async def test_tenants_have_different_secrets(
    client: Client, auth: dict[str, str], pool: Any
) -> None:
    from pulse.store.tenants import TenantStore

    other = await TenantStore(pool).create(f"receipts-{secrets.token_hex(4)}")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}

    _, mine = await call(client, "PUT", "/api/receipts", auth, {"url": "https://example.com/a"})
    _, theirs = await call(
        client, "PUT", "/api/receipts", other_auth, {"url": "https://example.com/b"}
    )

    assert mine["secret"] != theirs["secret"]


async def test_a_second_rotation_within_the_overlap_is_refused(
    local: Settings, auth: dict[str, str], receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    endpoint = {"url": f"{base}/receipts", "events": ["delivered"]}
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given: a receipt endpoint whose secret was rotated once
        _, original = await call(client, "PUT", "/api/receipts", auth, endpoint)
        first, _ = await call(client, "POST", "/api/receipts/rotate", auth)

        # When: it is rotated again within the day
        again = await client.post("/api/receipts/rotate", headers=auth)
        _, after = await call(client, "GET", "/api/receipts", auth)

    # Then: 409 with when to try again, and the original secret still signs
    assert first == 200
    assert again.status == 409
    assert 0 < int(again.headers["Retry-After"]) <= 24 * 3600
    assert after["previous_secret"] == original["secret"]
