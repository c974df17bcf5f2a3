"""One trace from the client's request to the provider's: the API accepts a W3C
``traceparent`` (a malformed one is ignored), the stream message carries it to the worker, the
provider request sends it on with a span id of its own; with the OpenTelemetry SDK installed,
the spans (request, accept, delivery, provider call) are recorded in one trace."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pulse import tracing
from pulse.channels.fcm import FcmChannel, FcmConfig, PushPayload, ServiceAccount
from pulse.channels.registry import channel_specs
from pulse.channels.twilio import TextPayload, TwilioChannel, TwilioConfig
from pulse.config import Settings
from pulse.core.ports import Delivered, Envelope
from pulse.core.tracecontext import parse_traceparent
from pulse.http.app import create_app
from pulse.store.tenants import NewTenant
from tests.conftest import Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration

TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CLIENT_SPAN}-01"
HEADER = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


class Recorder:
    """A loopback receiver of webhooks, Twilio's Messages API and FCM: keeps each request's
    headers, answers from a script (webhooks) or with the provider's success."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.replies: list[int] = []

    async def hook(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        status = self.replies.pop(0) if self.replies else 200
        return web.Response(status=status, headers={"Retry-After": "0"}, text="ok")

    async def twilio(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        return web.json_response({"sid": "SM" + "1" * 32, "status": "queued"}, status=201)

    async def token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": "ya29.t", "expires_in": 3599})

    async def fcm(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        return web.json_response({"name": "projects/p/messages/1"})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    target = Recorder()
    app = web.Application()
    app.router.add_post("/hook", target.hook)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", target.twilio)
    app.router.add_post("/token", target.token)
    app.router.add_post("/v1/projects/{project}/messages:send", target.fcm)
    async with TestServer(app, host="127.0.0.1") as server:
        yield target, str(server.make_url("")).rstrip("/")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in memory by the OpenTelemetry SDK for this test only."""
    provider = TracerProvider()
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracing.use(provider)
    yield exported
    tracing.use(None)
    provider.shutdown()


async def send_webhook(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    url: str,
    headers: dict[str, str],
) -> tuple[dict[str, Any], str]:
    """Send one webhook notification through the API and a worker; its document once
    delivered, and the signing secret."""
    local = msgspec.structs.replace(
        settings, webhook_allow_http=True, webhook_allow_private=True,
        worker_reclaim_interval_ms=50,
    )  # fmt: skip
    start_worker(local)
    body = {"recipient": url, "channel": "webhook", "payload": {"type": "t", "data": {"n": 1}}}
    client: Client
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        secret = await client.get("/api/webhooks/secret", headers=auth)
        signing = msgspec.json.decode(await secret.read())["secret"]
        response = await client.post("/api/notifications/", json=body, headers=auth | headers)
        assert response.status == 202
        document = await wait_for_status(client, auth, response.headers["Location"], "delivered")
    return document, signing


async def test_a_valid_trace_reaches_the_webhook_receiver_as_a_child_span(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    recorder: tuple[Recorder, str],
) -> None:
    target, base = recorder
    target.replies = [503]  # two attempts: each sends its own span id

    await send_webhook(
        settings, start_worker, auth, f"{base}/hook",
        {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"},
    )  # fmt: skip

    sent = [HEADER.match(headers["traceparent"]) for headers in target.headers]
    assert len(sent) == 2
    assert all(match is not None and match.group(1) == TRACE for match in sent)
    span_ids = {match.group(2) for match in sent if match is not None}
    assert len(span_ids) == 2
    assert CLIENT_SPAN not in span_ids  # a child span, not the client's own
    assert all(headers["tracestate"] == "rojo=00f067aa0ba902b7" for headers in target.headers)


@pytest.mark.parametrize(
    "given",
    [f"00-{TRACE.upper()}-{CLIENT_SPAN}-01", f"ff-{TRACE}-{CLIENT_SPAN}-01", "00-abc", "x" * 600],
)
async def test_a_malformed_traceparent_is_ignored_and_a_new_trace_made(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    recorder: tuple[Recorder, str],
    given: str,
) -> None:
    target, base = recorder

    await send_webhook(
        settings, start_worker, auth, f"{base}/hook", {"traceparent": given, "tracestate": "a=1"}
    )

    (headers,) = target.headers
    match = HEADER.match(headers["traceparent"])
    assert match is not None
    assert match.group(1) not in (TRACE, TRACE.upper())
    assert "tracestate" not in headers  # never parsed without a valid traceparent


async def test_twilio_and_fcm_requests_carry_the_provider_call_span(
    recorder: tuple[Recorder, str],
) -> None:
    target, base = recorder
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    account = ServiceAccount(
        project_id="p", private_key=pem, client_email="a@p.iam", token_uri=f"{base}/token"
    )
    twilio = TwilioChannel(
        TwilioConfig("AC" + "0" * 32, "token", base, from_number="+15005550006"), whatsapp=False
    )
    fcm = FcmChannel(FcmConfig(account, base_url=base))
    sms = Envelope("n1", "t", "+14155552671", TextPayload(body="hi"), 1)
    push = Envelope("n2", "t", "a" * 40, PushPayload(title="hi"), 1)
    spans = []
    try:
        for channel, envelope in ((twilio, sms), (fcm, push)):
            with tracing.span("pulse.provider", parse_traceparent(TRACEPARENT)) as span:
                assert isinstance(await channel.send(envelope), Delivered)
                spans.append(span.context.traceparent())
    finally:
        await twilio.close()
        await fcm.close()

    assert [headers["traceparent"] for headers in target.headers] == spans
    assert all(HEADER.match(sent) and TRACE in sent for sent in spans)


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [span for span in spans if span.name == name]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_spans_accept_to_delivery_in_the_exporter(
    settings: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    tenant: NewTenant,
    recorder: tuple[Recorder, str],
    exporter: InMemorySpanExporter,
) -> None:
    target, base = recorder
    target.replies = [503]

    document, signing = await send_webhook(
        settings, start_worker, auth, f"{base}/hook", {"traceparent": TRACEPARENT}
    )

    spans = [
        s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE
    ]
    server = next(s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith("POST "))
    accept = one(spans, "pulse.accept")
    deliveries = sorted(
        (s for s in spans if s.name == "pulse.deliver"), key=lambda s: s.start_time or 0
    )
    calls = [s for s in spans if s.name == "pulse.provider"]
    assert parent_of(server) == int(CLIENT_SPAN, 16)
    assert parent_of(accept) == server.context.span_id
    assert [parent_of(d) for d in deliveries] == [accept.context.span_id] * 2
    assert sorted(parent_of(c) or 0 for c in calls) == sorted(d.context.span_id for d in deliveries)
    assert accept.kind == SpanKind.PRODUCER
    assert {d.kind for d in deliveries} == {SpanKind.CONSUMER}
    assert {c.kind for c in calls} == {SpanKind.CLIENT}

    assert accept.attributes is not None
    assert accept.attributes["pulse.notification.id"] == document["id"]
    assert accept.attributes["pulse.channel"] == "webhook"
    assert accept.attributes["pulse.outcome"] == "accepted"
    delivery_attributes = [dict(d.attributes or {}) for d in deliveries]
    assert [a["pulse.attempt"] for a in delivery_attributes] == [1, 2]
    assert [a["pulse.outcome"] for a in delivery_attributes] == ["retry", "delivered"]
    assert all(a["pulse.notification.id"] == document["id"] for a in delivery_attributes)
    assert all(a["pulse.channel"] == "webhook" for a in delivery_attributes)
    assert all((c.attributes or {})["pulse.provider"] == "webhook" for c in calls)

    sent_ids = [HEADER.match(h["traceparent"]) for h in target.headers]
    assert sorted(m.group(2) for m in sent_ids if m) == sorted(
        format(c.context.span_id, "016x") for c in calls
    )

    values = " ".join(str(v) for s in spans for v in (s.attributes or {}).values())
    secrets = [tenant.api_key, signing, settings.receipt_signing_key or "unset"]
    assert all(secret not in values for secret in secrets)
