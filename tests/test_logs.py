"""JSON logs of a real API and worker: every line of a delivery carries its notification id,
tenant, channel, attempt, provider, the accepting request's id and the trace id; every line of
an API request carries the request id and trace; a provider error that echoes a configured
secret is scrubbed in the log line as on the attempt row."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pulse import logs
from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.store.tenants import NewTenant
from tests.conftest import Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
DELIVERY_FIELDS = ("notification_id", "tenant_id", "channel", "attempt", "provider", "request_id")
TWILIO_SID, TWILIO_TOKEN = "AC" + "3" * 32, "echoed-twilio-auth-token"
probe = logging.getLogger("pulse.tests.logs")


class Captured:
    """Every line Pulse's loggers write during a test, in the JSON format."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def captured(settings: Settings) -> Iterator[Captured]:
    """JSON lines at DEBUG, scrubbed of the secrets ``settings`` and the Twilio test account
    hold, as ``pulse`` configures them."""
    found = Captured()
    handler = logs.handler(found.stream, "json", [*settings.secret_values(), TWILIO_TOKEN])
    pulse = logging.getLogger("pulse")
    previous = pulse.level
    pulse.addHandler(handler)
    pulse.setLevel(logging.DEBUG)
    yield found
    pulse.setLevel(previous)
    pulse.removeHandler(handler)


class Endpoint:
    """A loopback webhook receiver (answers from a script) and Twilio stand-in (refuses the
    number, echoing the account's token in its message as a careless provider might)."""

    def __init__(self) -> None:
        self.replies: list[int] = []

    async def hook(self, request: web.Request) -> web.Response:
        status = self.replies.pop(0) if self.replies else 200
        return web.Response(status=status, headers={"Retry-After": "0"})

    async def twilio(self, request: web.Request) -> web.Response:
        message = f"The 'To' number is not valid (request authorised by {TWILIO_TOKEN})"
        return web.json_response({"code": 21211, "message": message, "status": 400}, status=400)


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Endpoint, str]]:
    target = Endpoint()
    app = web.Application()
    app.router.add_post("/hook", target.hook)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", target.twilio)
    async with TestServer(app, host="127.0.0.1") as server:
        yield target, str(server.make_url("")).rstrip("/")


async def accept_and_wait(
    local: Settings, auth: dict[str, str], body: dict[str, Any], headers: dict[str, str],
    *statuses: str,
) -> dict[str, Any]:  # fmt: skip
    client: Client
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        if body["channel"] == "webhook":
            await client.get("/api/webhooks/secret", headers=auth)  # the tenant's signing key
        response = await client.post("/api/notifications/", json=body, headers=auth | headers)
        assert response.status == 202
        return await wait_for_status(client, auth, response.headers["Location"], *statuses)


async def test_every_line_of_a_delivery_carries_its_context(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    tenant: NewTenant,
    endpoint: tuple[Endpoint, str],
    captured: Captured,
) -> None:
    target, base = endpoint
    target.replies = [503]  # attempt 1 is retried, attempt 2 delivers
    local = msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True,
        worker_reclaim_interval_ms=50,
    )  # fmt: skip
    start_worker(local)
    body = {"recipient": f"{base}/hook", "channel": "webhook",
            "payload": {"type": "order.shipped", "data": {"order": 1}}}  # fmt: skip
    headers = {"X-Request-ID": "req-logs-1", "traceparent": TRACEPARENT}

    document = await accept_and_wait(local, auth, body, headers, "delivered")

    lines = captured.lines()
    delivery = [line for line in lines if line.get("notification_id") == document["id"]]
    assert [line["attempt"] for line in delivery] == [1, 2]
    assert [line["level"] for line in delivery] == ["INFO", "DEBUG"]  # retry, then delivered
    for line in delivery:
        assert all(field in line for field in DELIVERY_FIELDS), line
        assert line["tenant_id"] == tenant.tenant_id
        assert (line["channel"], line["provider"]) == ("webhook", "webhook")
        assert line["request_id"] == "req-logs-1"
        assert line["trace_id"] == TRACE
        assert {"time", "level", "logger", "message"} <= set(line)
    worker_lines = [line for line in lines if line["logger"].startswith("pulse.runtime.failover")]
    assert worker_lines == delivery  # no line of a delivery without its context


async def probe_route(request: web.Request) -> web.Response:
    probe.info("probe line")
    return web.Response(text="logged")


@pytest.mark.parametrize(
    ("traceparent", "kept"),
    [(TRACEPARENT, True), (TRACEPARENT.upper(), False), ("00-1-2-3", False)],
)
async def test_every_line_of_a_request_carries_its_id_and_trace(
    settings: Settings, captured: Captured, traceparent: str, kept: bool
) -> None:
    app = create_app(settings, channel_specs(settings), Metrics())
    app.router.add_get("/probe-log", probe_route)
    client: Client
    async with TestClient(TestServer(app)) as client:
        response = await client.get(
            "/probe-log", headers={"X-Request-ID": "req-9", "traceparent": traceparent}
        )

    assert response.status == 200
    (line,) = [line for line in captured.lines() if line["message"] == "probe line"]
    assert line["request_id"] == "req-9"
    assert (line["trace_id"] == TRACE) is kept
    assert len(line["trace_id"]) == 32
    assert len(line["span_id"]) == 16


async def test_a_provider_error_echoing_a_secret_is_scrubbed_in_the_log(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    endpoint: tuple[Endpoint, str],
    captured: Captured,
) -> None:
    _, base = endpoint
    local = msgspec.structs.replace(
        settings, twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN,
        twilio_base_url=base, twilio_from="+15005550006",
    )  # fmt: skip
    start_worker(local)
    body = {"recipient": "+14155552671", "channel": "sms", "payload": {"body": "hi"}}

    document = await accept_and_wait(local, auth, body, {}, "failed")

    lines = captured.lines()
    failure = [line for line in lines if line.get("notification_id") == document["id"]]
    assert [line["level"] for line in failure] == ["WARNING"]
    assert "Twilio21211" in failure[0]["message"]
    assert "request authorised by ***" in failure[0]["message"]
    assert failure[0]["provider"] == "twilio"
    assert failure[0]["request_id"] is not None
    assert TWILIO_TOKEN not in captured.stream.getvalue()
