"""SMS and WhatsApp against a local server speaking Twilio's Messages API wire format."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.channels.twilio import TextPayload, TwilioChannel, TwilioConfig
from pulse.config import Settings, TwilioProvider
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed, Retry
from pulse.core.signatures import twilio_signature
from pulse.http.app import create_app
from tests.conftest import WorkerFactory, wait_for_status
from tests.provider_fakes import BACKUP_SID, BACKUP_TOKEN, SID, TOKEN, FakeTwilio

pytestmark = pytest.mark.integration


async def send(base: str, to: str, whatsapp: bool = False) -> Any:
    config = TwilioConfig(
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


async def test_sms_end_to_end_with_a_signed_status_callback(
    settings: Settings,
    start_worker: WorkerFactory,
    twilio: tuple[FakeTwilio, str],
    auth: dict[str, str],
) -> None:
    _, base = twilio
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

    assert bad_number.status == 422
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
