"""Fallback chains across channels: push, then sms, then email, end to end, against local
servers speaking FCM's and Twilio's wire formats and a real SMTP server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.devtools.smtp_sink import SmtpSink
from pulse.http.app import create_app
from tests.conftest import Client, WorkerFactory, wait_for_status
from tests.provider_fakes import SID, TOKEN, UNREGISTERED, FakeGoogle, FakeTwilio

pytestmark = pytest.mark.integration

INVALID_NUMBER = "+15005550001"  # the fake answers Twilio's 21211: permanent


@pytest.fixture
def chained(
    settings: Settings, google: tuple[FakeGoogle, Settings], twilio: tuple[FakeTwilio, str]
) -> Settings:
    """Push through the fake FCM, sms through the fake Twilio, email through the SMTP sink."""
    _, fcm = google
    _, base = twilio
    return msgspec.structs.replace(
        settings,
        fcm_service_account_file=fcm.fcm_service_account_file,
        fcm_base_url=fcm.fcm_base_url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_base_url=base,
        twilio_from="+15005550006",
        retry_base_s=0.05,
    )


def chain(sms_to: str, email_to: str = "someone@example.com") -> dict[str, Any]:
    return {
        "recipient": UNREGISTERED,
        "channel": "push",
        "payload": {"title": "Your code", "body": "1234"},
        "fallback": [
            {"channel": "sms", "recipient": sms_to, "payload": {"body": "Your code: 1234"}},
            {"channel": "email", "recipient": email_to,
             "payload": {"subject": "Your code", "body": "1234"}},
        ],
    }  # fmt: skip


async def settle(client: Client, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/notifications/", json=body, headers=auth)
    assert response.status == 202, await response.text()
    location = response.headers["Location"]
    document = await wait_for_status(client, auth, location, "delivered", "failed")
    attempts = msgspec.json.decode(
        await (await client.get(location + "/attempts", headers=auth)).read()
    )
    document["attempt_rows"] = attempts["attempts"]
    return document


async def test_push_then_sms_then_email(
    chained: Settings,
    start_worker: WorkerFactory,
    auth: dict[str, str],
    google: tuple[FakeGoogle, Settings],
    twilio: tuple[FakeTwilio, str],
) -> None:
    # Given: a device that is no longer registered and a number Twilio refuses
    start_worker(chained)
    async with TestClient(TestServer(create_app(chained, channel_specs(chained)))) as client:
        # When
        document = await settle(client, auth, chain(sms_to=INVALID_NUMBER))

    # Then: each channel failed for good in turn, and email delivered
    history = [(h["status"], h["detail"]) for h in document["history"]]
    fallbacks = [d for s, d in history if s == "queued" and (d or "").startswith("fallback ")]
    assert document["status"] == "delivered"
    assert document["step"] == 2
    assert document["channel"] == "push"  # the notification keeps its own channel
    assert len(fallbacks) == 2
    assert fallbacks[0].startswith("fallback push -> sms: permanent failure")
    assert "UNREGISTERED" in fallbacks[0]
    assert fallbacks[1].startswith("fallback sms -> email: permanent failure")
    rows = [
        (r["channel"], r["number"], r["outcome"], r["error_class"])
        for r in document["attempt_rows"]
    ]
    assert rows == [
        ("push", 1, "failed", "UNREGISTERED"),
        ("sms", 1, "failed", "Twilio21211"),
        ("email", 1, "delivered", None),
    ]
    assert google[0].messages[-1]["token"] == UNREGISTERED
    assert twilio[0].requests[-1]["To"] == INVALID_NUMBER


async def test_the_chain_stops_at_the_first_channel_that_delivers(
    chained: Settings, start_worker: WorkerFactory, auth: dict[str, str], smtp_sink: SmtpSink
) -> None:
    start_worker(chained)
    async with TestClient(TestServer(create_app(chained, channel_specs(chained)))) as client:
        document = await settle(client, auth, chain(sms_to="+14155552671"))

    assert document["status"] == "delivered"
    assert document["step"] == 1
    assert [r["channel"] for r in document["attempt_rows"]] == ["push", "sms"]
    mailed = [m for m in smtp_sink.messages() if m.message_id == f"<{document['id']}@pulse>"]
    assert mailed == []  # email was never needed


async def test_a_chain_that_fails_everywhere_fails_once_with_one_dead_letter(
    chained: Settings, start_worker: WorkerFactory, auth: dict[str, str]
) -> None:
    body = chain(sms_to=INVALID_NUMBER)
    body["fallback"] = body["fallback"][:1]
    start_worker(chained)
    async with TestClient(TestServer(create_app(chained, channel_specs(chained)))) as client:
        document = await settle(client, auth, body)
        dead = msgspec.json.decode(
            await (await client.get("/api/dead-letters?channel=push", headers=auth)).read()
        )

    assert document["status"] == "failed"
    assert document["step"] == 1
    assert "Twilio21211" in "".join(r["error_class"] or "" for r in document["attempt_rows"])
    mine = [d for d in dead["items"] if d["notification_id"] == document["id"]]
    assert len(mine) == 1


async def test_a_temporary_failure_retries_before_falling_back(
    chained: Settings, start_worker: WorkerFactory, auth: dict[str, str]
) -> None:
    # Given: a webhook endpoint that refuses connections (temporary), then sms
    local = msgspec.structs.replace(chained, webhook_allow_http=True, webhook_allow_private=True)
    body = chain(sms_to="+14155552671") | {
        "channel": "webhook",
        "recipient": f"http://127.0.0.1:{free_port('127.0.0.1')}/hook",
        "payload": {"type": "code.sent", "data": {}},
        "max_attempts": 2,
    }
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        document = await settle(client, auth, body)

    rows = [(r["channel"], r["number"], r["outcome"]) for r in document["attempt_rows"]]
    assert document["status"] == "delivered"
    assert rows == [("webhook", 1, "retry"), ("webhook", 2, "retry"), ("sms", 1, "delivered")]


@pytest.mark.parametrize(
    ("step", "pointer"),
    [
        ({"channel": "fax", "recipient": "x", "payload": {}}, "/fallback/1/channel"),
        (
            {"channel": "sms", "recipient": "0155", "payload": {"body": "x"}},
            "/fallback/1/recipient",
        ),
        (
            {"channel": "sms", "recipient": "+14155552671", "payload": {}},
            "/fallback/1/payload/body",
        ),
        ({"channel": "sms", "recipient": "+14155552671"}, "/fallback/1/payload"),
    ],
)
async def test_each_step_is_checked_at_accept_time(
    client: Client, auth: dict[str, str], step: dict[str, Any], pointer: str
) -> None:
    body = chain(sms_to="+14155552671")
    body["fallback"][1] = step

    response = await client.post("/api/notifications/", json=body, headers=auth)

    problem = msgspec.json.decode(await response.read())
    assert response.status == 422
    assert problem["errors"][0]["pointer"] == pointer


async def test_a_chain_is_at_most_five_steps(client: Client, auth: dict[str, str]) -> None:
    body = chain(sms_to="+14155552671")
    body["fallback"] = body["fallback"] * 3

    response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 422
    assert msgspec.json.decode(await response.read())["errors"][0]["pointer"] == "/fallback"
