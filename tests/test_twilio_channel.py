"""SMS and WhatsApp against a local server speaking Twilio's Messages API wire format."""

from __future__ import annotations

import base64
import hmac
from dataclasses import replace
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.channels.twilio import TextPayload, TwilioChannel, TwilioConfig
from pulse.config import Settings, TwilioProvider
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from pulse.core.signatures import twilio_signature, valid_twilio_signature
from pulse.http.app import create_app
from pulse.store.tenants import NewTenant
from tests.conftest import WorkerFactory, wait_for_status
from tests.provider_fakes import (
    BACKUP_SID,
    BACKUP_TOKEN,
    SERVICE,
    SID,
    SMS_ONLY_SERVICE,
    TOKEN,
    FakeTwilio,
)

pytestmark = pytest.mark.integration


async def send(
    base: str, to: str, whatsapp: bool = False, config: TwilioConfig | None = None
) -> Any:
    config = config or TwilioConfig(
        account_sid=SID, auth_token=TOKEN, base_url=base, from_number="+15005550006",
        whatsapp_from="+14155238886", status_callback_base="https://pulse.example.com",
    )  # fmt: skip
    channel = TwilioChannel(config, whatsapp=whatsapp)
    await channel.start()
    try:
        envelope = Envelope(str(uuid7()), str(uuid7()), to, TextPayload(body="Your code: 1234"), 1)
        return await channel.send(envelope)
    finally:
        await channel.close()


async def test_sms_and_whatsapp_requests_and_outcomes(twilio: tuple[FakeTwilio, str]) -> None:
    fake, base = twilio

    sms = await send(base, "+14155552671")
    whatsapp = await send(base, "+14155552671", whatsapp=True)
    invalid = await send(base, "+15005550001")
    throttled = await send(base, "+15005550009")

    assert isinstance(sms, Delivered)
    assert sms.provider_id is not None
    assert sms.provider_id.startswith("SM")
    assert fake.requests[0]["From"] == "+15005550006"
    assert fake.requests[0]["Body"] == "Your code: 1234"
    assert fake.requests[0]["StatusCallback"].startswith(
        "https://pulse.example.com/providers/twilio/status/"
    )
    assert isinstance(whatsapp, Delivered)
    assert fake.requests[1]["To"] == "whatsapp:+14155552671"
    assert fake.requests[1]["From"] == "whatsapp:+14155238886"
    assert isinstance(invalid, Failed)
    assert invalid.error_class == "Twilio21211"
    assert isinstance(throttled, Retry)
    assert throttled.after_s == 3.0


async def test_an_account_with_only_a_messaging_service_sends_whatsapp_through_it(
    twilio: tuple[FakeTwilio, str],
) -> None:
    # Given an account configured with a Messaging Service SID and no sender number
    fake, base = twilio
    config = TwilioConfig(account_sid=SID, auth_token=TOKEN, base_url=base,
                          messaging_service_sid=SERVICE)  # fmt: skip

    # When it sends WhatsApp and SMS
    whatsapp = await send(base, "+14155552671", whatsapp=True, config=config)
    sms = await send(base, "+14155552671", config=config)

    # Then both go through the service, which picks the sender of each channel
    assert isinstance(whatsapp, Delivered), whatsapp
    assert fake.requests[0]["MessagingServiceSid"] == SERVICE
    assert fake.requests[0]["To"] == "whatsapp:+14155552671"
    assert "From" not in fake.requests[0]
    assert isinstance(sms, Delivered), sms
    assert fake.requests[1]["MessagingServiceSid"] == SERVICE


async def test_a_channel_without_a_sender_is_not_configured_and_twilio_is_not_called(
    twilio: tuple[FakeTwilio, str],
) -> None:
    # Given an account with an SMS number only
    fake, base = twilio
    config = TwilioConfig(account_sid=SID, auth_token=TOKEN, base_url=base,
                          from_number="+15005550006")  # fmt: skip

    # When it is asked for WhatsApp, as the default account and as a named one
    outcome = await send(base, "+14155552671", whatsapp=True, config=config)
    backup = await send(
        base, "+14155552671", whatsapp=True, config=replace(config, provider="wa-backup")
    )

    # Then nothing is sent, and the outcome names the settings to give; it is not the
    # provider's fault (the breaker it shares with SMS stays closed)
    assert isinstance(outcome, Retry)
    assert outcome.error_class == "NotConfigured"
    assert "PULSE_TWILIO_WHATSAPP_FROM" in outcome.error
    assert "PULSE_TWILIO_MESSAGING_SERVICE_SID" in outcome.error
    assert not outcome.provider_fault
    assert isinstance(backup, Retry)
    assert "PULSE_PROVIDER_WA_BACKUP__WHATSAPP_FROM" in backup.error
    assert "PULSE_PROVIDER_WA_BACKUP__MESSAGING_SERVICE_SID" in backup.error
    assert fake.requests == []


async def test_the_fake_refuses_what_twilio_refuses(twilio: tuple[FakeTwilio, str]) -> None:
    # Given raw Messages API requests, as another client could send them
    _, base = twilio
    url = f"{base}/2010-04-01/Accounts/{SID}/Messages.json"
    wa = {"To": "whatsapp:+14155552671", "Body": "Hi"}
    cases = {
        21603: wa,  # neither From nor MessagingServiceSid
        21910: wa | {"From": "+15005550006"},  # an SMS number for WhatsApp
        21701: wa | {"MessagingServiceSid": "MG" + "9" * 32},  # no such service
        63007: wa | {"MessagingServiceSid": SMS_ONLY_SERVICE},  # no WhatsApp sender in it
    }
    codes = {}
    auth = {"Authorization": aiohttp.encode_basic_auth(SID, TOKEN)}
    async with aiohttp.ClientSession(headers=auth) as session:
        for expected, form in cases.items():
            async with session.post(url, data=form) as response:
                codes[expected] = (response.status, (await response.json())["code"])

    assert codes == {code: (400, code) for code in cases}


async def test_sms_end_to_end_with_a_signed_status_callback(
    settings: Settings,
    start_worker: WorkerFactory,
    twilio: tuple[FakeTwilio, str],
    auth: dict[str, str],
) -> None:
    fake, base = twilio
    local = msgspec.structs.replace(
        settings, twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_base_url=base,
        twilio_from="+15005550006", public_url="https://pulse.example.com",
    )  # fmt: skip
    start_worker(local)
    body = {"recipient": "+14155552671", "channel": "sms", "payload": {"body": "Hi"}}
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        bad_number = await client.post(
            "/api/notifications/", json=body | {"recipient": "0155"}, headers=auth
        )
        response = await client.post("/api/notifications/", json=body, headers=auth)
        document = await wait_for_status(client, auth, response.headers["Location"], "delivered")
        path = f"/providers/twilio/status/{document['id']}"
        report = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
        good = twilio_signature(TOKEN, "https://pulse.example.com" + path, report)
        forged = await client.post(path, data=report, headers={"X-Twilio-Signature": "forged"})
        accepted = await client.post(path, data=report, headers={"X-Twilio-Signature": good})
        after = await client.get(response.headers["Location"], headers=auth)
        history = [h["status"] for h in msgspec.json.decode(await after.read())["history"]]
        tries = await client.get(f"/api/notifications/{document['id']}/attempts", headers=auth)
        attempts = msgspec.json.decode(await tries.read())["attempts"]

    assert bad_number.status == 422
    assert [a["provider_message_id"] for a in attempts] == fake.sids  # Twilio's message SID
    assert forged.status == 403
    assert accepted.status == 204
    assert history[-1] == "provider:delivered"


async def test_a_named_twilio_account_delivers_and_its_callbacks_carry_its_token(
    settings: Settings,
    start_worker: WorkerFactory,
    twilio: tuple[FakeTwilio, str],
    auth: dict[str, str],
) -> None:
    fake, base = twilio
    backup = TwilioProvider(
        account_sid=BACKUP_SID, auth_token=BACKUP_TOKEN, base_url=base, sender="+15005550007"
    )
    local = msgspec.structs.replace(
        settings, twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_base_url=base,
        public_url="https://pulse.example.com", providers={"twilio-backup": backup},
    )  # fmt: skip
    body = {"recipient": "+14155552671", "channel": "sms", "payload": {"body": "Hi"}}
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        routed = await client.put(
            "/api/routes/sms", json={"providers": ["twilio-backup"]}, headers=auth
        )
        start_worker(local)
        response = await client.post("/api/notifications/", json=body, headers=auth)
        document = await wait_for_status(client, auth, response.headers["Location"], "delivered")
        callback = fake.requests[-1]["StatusCallback"]
        path = callback.removeprefix("https://pulse.example.com")
        report = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered"}
        wrong = twilio_signature(TOKEN, callback, report)  # the other account's token
        right = twilio_signature(BACKUP_TOKEN, callback, report)
        refused = await client.post(path, data=report, headers={"X-Twilio-Signature": wrong})
        accepted = await client.post(path, data=report, headers={"X-Twilio-Signature": right})

    assert routed.status == 200
    assert document["provider"] == "twilio-backup"
    assert fake.requests[-1]["account"] == BACKUP_SID
    assert fake.requests[-1]["From"] == "+15005550007"
    assert callback.endswith("?provider=twilio-backup")
    assert refused.status == 403
    assert accepted.status == 204


@pytest.mark.parametrize(
    ("public_url", "signed_base"),
    [
        ("https://pulse.example.com", "https://pulse.example.com:443"),  # Twilio added the port
        ("https://pulse.example.com:443", "https://pulse.example.com"),  # Twilio dropped it
        ("http://pulse.example.com", "http://pulse.example.com:80"),
        ("https://pulse.example.com:8443", "https://pulse.example.com"),  # as the SDK: any port
    ],
)
async def test_status_callbacks_signed_with_or_without_the_port_are_accepted(
    settings: Settings, tenant: NewTenant, public_url: str, signed_base: str
) -> None:
    # Given a notification and Pulse's public URL, with or without a port
    local = msgspec.structs.replace(
        settings, twilio_account_sid=SID, twilio_auth_token=TOKEN, public_url=public_url
    )
    notification_id = await _notification(local, tenant)
    path = f"/providers/twilio/status/{notification_id}"
    report = {"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"}

    # When Twilio signs the callback URL in the other form, as it may
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        signature = twilio_signature(TOKEN, signed_base + path, report)
        answer = await client.post(path, data=report, headers={"X-Twilio-Signature": signature})
        other_host = twilio_signature(TOKEN, "https://evil.example.com" + path, report)
        forged = await client.post(path, data=report, headers={"X-Twilio-Signature": other_host})

    # Then the report is accepted, as Twilio's own RequestValidator accepts it; another host's
    # signature still is not
    assert answer.status == 204
    assert forged.status == 403


async def _notification(settings: Settings, tenant: NewTenant) -> str:
    """A queued SMS notification of the tenant (no worker: only its callbacks matter here)."""
    body = {"recipient": "+14155552671", "channel": "sms", "payload": {"body": "Hi"}}
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    async with TestClient(TestServer(create_app(settings, channel_specs(settings)))) as client:
        response = await client.post("/api/notifications/", json=body, headers=headers)
        assert response.status == 202
        return str((await response.json())["id"])


def test_signature_checks_take_repeated_names_and_any_header_bytes() -> None:
    # Given a form with a repeated name, signed as Twilio's validator reads it (its distinct
    # values sorted), and a header that is not base64 at all
    url = "https://pulse.example.com/providers/twilio/status/x"
    params = {"To": "+1", "MediaUrl": ["https://b.example", "https://a.example"]}
    flat = url + "MediaUrlhttps://a.exampleMediaUrlhttps://b.exampleTo+1"
    expected = base64.b64encode(hmac.new(TOKEN.encode(), flat.encode(), "sha1").digest())

    # Then the signature is that one, and a non-ASCII header is simply not valid (no error)
    assert twilio_signature(TOKEN, url, params) == expected.decode()
    assert valid_twilio_signature(TOKEN, url, params, expected.decode())
    assert not valid_twilio_signature(TOKEN, url, params, "sïgnature\udcff")


async def test_callbacks_signed_with_a_webhook_shared_key_and_hmac_sha256(
    settings: Settings, tenant: NewTenant
) -> None:
    # Given an account whose Twilio Webhook Setting signs with a shared key and HMAC-SHA256,
    # the key given to Pulse, and one deployment that lacks it
    shared = "shared-key-secret-of-the-setting"
    local = msgspec.structs.replace(
        settings, twilio_account_sid=SID, twilio_auth_token=TOKEN,
        public_url="https://pulse.example.com", twilio_webhook_shared_key=shared,
    )  # fmt: skip
    lacking = msgspec.structs.replace(local, twilio_webhook_shared_key=None)
    path = f"/providers/twilio/status/{await _notification(local, tenant)}"
    report = {"MessageSid": "SM" + "4" * 32, "MessageStatus": "delivered"}
    url = "https://pulse.example.com" + path

    def signed(key: str, algorithm: str, announced: str) -> dict[str, str]:
        settings_header = f"key=webhooks_sharedkey_01,algorithm={announced}"
        return {"X-Twilio-Signature": twilio_signature(key, url, report, algorithm),
                "X-Twilio-Webhooks-Signature-Settings": settings_header}  # fmt: skip

    # When Twilio posts reports signed that way (and forgers try their variants)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        good = await client.post(
            path, data=report, headers=signed(shared, "HMAC_SHA256", "HMAC_SHA256")
        )
        with_token = await client.post(
            path, data=report, headers=signed(TOKEN, "HMAC_SHA256", "HMAC_SHA256")
        )
        as_sha1 = await client.post(
            path, data=report, headers=signed(shared, "HMAC_SHA1", "HMAC_SHA256")
        )
        unknown = await client.post(
            path, data=report, headers=signed(shared, "HMAC_SHA256", "HMAC_MD5")
        )
    async with TestClient(TestServer(create_app(lacking, channel_specs(lacking)))) as client:
        unconfigured = await client.post(
            path, data=report, headers=signed(shared, "HMAC_SHA256", "HMAC_SHA256")
        )
        problem = await unconfigured.json()

    # Then the shared key and the announced algorithm are what counts
    assert good.status == 204
    assert with_token.status == 403
    assert as_sha1.status == 403
    assert unknown.status == 403
    assert unconfigured.status == 501
    assert "PULSE_TWILIO_WEBHOOK_SHARED_KEY" in problem["detail"]
