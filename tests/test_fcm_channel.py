"""Push against local servers speaking FCM HTTP v1 and Google's OAuth2 token endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pulse.channels.fcm import GRANT_TYPE, SCOPE, FcmChannel, PushPayload
from pulse.channels.registry import fcm_config
from pulse.config import Settings
from pulse.ids import uuid7
from pulse.ports import Delivered, Envelope, Failed, Retry

GOOD = "a" * 40
UNREGISTERED = "u" * 40
BUSY = "b" * 40


class FakeGoogle:
    """The token endpoint verifies the RS256 grant; messages:send answers FCM's documented
    success and error bodies by target token."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.tokens_issued = 0
        self.messages: list[dict[str, Any]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == GRANT_TYPE
        claims = jwt.decode(
            str(form["assertion"]), self.public_key, algorithms=["RS256"],
            audience=str(request.url),
        )  # fmt: skip
        assert claims["scope"] == SCOPE
        self.tokens_issued += 1
        return web.json_response(
            {"access_token": f"ya29.token{self.tokens_issued}", "expires_in": 3599,
             "token_type": "Bearer"}
        )  # fmt: skip

    async def send(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("Bearer ya29.token")
        assert request.match_info["project"] == "pulse-test"
        body = await request.json()
        self.messages.append(body["message"])
        target = body["message"].get("token")
        if target == UNREGISTERED:
            return _error(404, "NOT_FOUND", "UNREGISTERED")
        if target == BUSY:
            return _error(503, "UNAVAILABLE", "UNAVAILABLE", retry_after="11")
        return web.json_response({"name": "projects/pulse-test/messages/0:1234"})


def _error(status: int, rpc: str, code: str, retry_after: str | None = None) -> web.Response:
    body = {"error": {"code": status, "message": "Requested entity was not found.",
                      "status": rpc, "details": [
                          {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                           "errorCode": code}]}}  # fmt: skip
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[tuple[FakeGoogle, Settings]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    fake = FakeGoogle(key.public_key())
    app = web.Application()
    app.router.add_post("/token", fake.token)
    app.router.add_post("/v1/projects/{project}/messages:send", fake.send)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        account = {
            "type": "service_account",
            "project_id": "pulse-test",
            "private_key": pem,
            "private_key_id": "k1",
            "client_email": "pulse@pulse-test.iam.gserviceaccount.com",
            "token_uri": f"{base}/token",
        }
        path = tmp_path / "service-account.json"
        path.write_bytes(msgspec.json.encode(account))
        yield fake, Settings(fcm_service_account_file=str(path), fcm_base_url=base)


async def push(channel: FcmChannel, target: str) -> Any:
    payload = PushPayload(title="Your order", body="has shipped", data={"order": "42"})
    return await channel.send(Envelope(str(uuid7()), str(uuid7()), target, payload, 1))


async def test_push_outcomes_and_a_cached_access_token(
    google: tuple[FakeGoogle, Settings],
) -> None:
    fake, settings = google
    channel = FcmChannel(fcm_config(settings))
    await channel.start()
    try:
        sent = await push(channel, GOOD)
        to_topic = await push(channel, "/topics/news")
        gone = await push(channel, UNREGISTERED)
        busy = await push(channel, BUSY)
    finally:
        await channel.close()

    assert isinstance(sent, Delivered)
    assert sent.provider_id == "projects/pulse-test/messages/0:1234"
    assert isinstance(to_topic, Delivered)
    assert fake.messages[1]["topic"] == "news"
    assert fake.messages[0]["notification"] == {"title": "Your order", "body": "has shipped"}
    assert isinstance(gone, Failed)
    assert gone.error_class == "UNREGISTERED"
    assert isinstance(busy, Retry)
    assert busy.after_s == 11.0
    assert fake.tokens_issued == 1  # one grant, cached for every later send


def test_registration_tokens_and_topics_are_checked() -> None:
    from pulse.channels.fcm import check_target

    assert check_target(GOOD) == GOOD
    assert check_target("/topics/news") == "/topics/news"
    for bad in ("short", "/topics/", "not a token with spaces" * 3):
        with pytest.raises(ValueError, match="FCM"):
            check_target(bad)


def test_unreadable_service_account_is_a_config_error(tmp_path: Path) -> None:
    from pulse.errors import ConfigError

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="PULSE_FCM_SERVICE_ACCOUNT_FILE"):
        fcm_config(Settings(fcm_service_account_file=str(tmp_path / "bad.json")))
