"""Local servers that speak providers' documented wire formats, for the channel tests:
Twilio's Messages API, Google's OAuth2 token endpoint and FCM HTTP v1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pulse.channels.fcm import GRANT_TYPE, SCOPE
from pulse.config import Settings

SID, TOKEN = "AC" + "0" * 32, "twilio-auth-token"
BACKUP_SID, BACKUP_TOKEN = "AC" + "7" * 32, "backup-account-token"
SERVICE, SMS_ONLY_SERVICE = "MG" + "5" * 32, "MG" + "6" * 32  # Messaging Services


class FakeTwilio:
    """Answers like Twilio: 201 with a Message resource, or its documented error bodies. Knows
    the accounts it is given (SID -> auth token) and their Messaging Services (SID -> the
    channels their sender pools hold); each request is kept with its account. Refuses what
    Twilio refuses: no sender at all (21603), an unknown Messaging Service (21701), a service
    with no sender for the channel (63007), a ``From`` of another channel than ``To`` (21910).
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        services: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.accounts = accounts or {SID: TOKEN, BACKUP_SID: BACKUP_TOKEN}
        self.services = services or {SERVICE: frozenset({"sms", "whatsapp"}), SMS_ONLY_SERVICE:
                                     frozenset({"sms"})}  # fmt: skip
        self.requests: list[dict[str, Any]] = []
        self.sids: list[str] = []  # of the messages it accepted

    async def messages(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        expected = aiohttp.encode_basic_auth(sid, self.accounts.get(sid, ""))
        if request.headers.get("Authorization") != expected:
            return _twilio_error(401, 20003, "Authenticate")
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(form | {"account": sid})
        refusal = self._refusal(form)
        if refusal is not None:
            return refusal
        self.sids.append("SM" + uuid.uuid4().hex)
        body = {"sid": self.sids[-1], "status": "queued", "to": form["To"],
                "messaging_service_sid": form.get("MessagingServiceSid")}  # fmt: skip
        return web.json_response(body, status=201)

    def _refusal(self, form: dict[str, str]) -> web.Response | None:
        channel = "whatsapp" if form["To"].startswith("whatsapp:") else "sms"
        to = form["To"].removeprefix("whatsapp:")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not sender and not service:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if sender and sender.startswith("whatsapp:") != (channel == "whatsapp"):
            return _twilio_error(400, 21910, "Invalid From and To pair. From and To should "
                                 "be of the same channel")  # fmt: skip
        if service and service not in self.services:
            return _twilio_error(400, 21701, f"The Messaging Service {service} does not exist")
        if not sender and service and channel not in self.services[service]:
            return _twilio_error(400, 63007, "Twilio could not find a Channel with the "
                                 "specified From address")  # fmt: skip
        if to == "+15005550001":
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to == "+15005550009":
            return _twilio_error(429, 20429, "Too Many Requests", retry_after="3")
        return None


def _twilio_error(
    status: int, code: int, message: str, retry_after: str | None = None
) -> web.Response:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}  # fmt: skip
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.messages)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")


GOOD = "a" * 40
UNREGISTERED = "u" * 40
BUSY = "b" * 40


class FakeGoogle:
    """The token endpoint verifies the RS256 grant; messages:send answers FCM's documented
    success and error bodies by target token."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.grant_dead_tokens = False  # grants tokens that FCM then refuses (a broken account)
        self.messages: list[dict[str, Any]] = []
        self.refused = 0  # sends answered 401
        self.names: list[str] = []  # of the messages it accepted

    def revoke(self) -> None:
        """Every access token granted so far stops working, as a revoked or early-expired
        token does: FCM answers 401 UNAUTHENTICATED."""
        self.valid_tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == GRANT_TYPE
        claims = jwt.decode(
            str(form["assertion"]), self.public_key, algorithms=["RS256"],
            audience=str(request.url),
        )  # fmt: skip
        assert claims["scope"] == SCOPE
        self.tokens_issued += 1
        token = f"ya29.token{self.tokens_issued}"
        if not self.grant_dead_tokens:
            self.valid_tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    async def send(self, request: web.Request) -> web.Response:
        assert request.match_info["project"] == "pulse-test"
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.valid_tokens:
            self.refused += 1
            return _unauthenticated()
        body = await request.json()
        self.messages.append(body["message"])
        target = body["message"].get("token")
        if target == UNREGISTERED:
            return _error(404, "NOT_FOUND", "UNREGISTERED")
        if target == BUSY:
            return _error(503, "UNAVAILABLE", "UNAVAILABLE", retry_after="11")
        self.names.append(f"projects/pulse-test/messages/0:{uuid.uuid4().int % 10**16}")
        return web.json_response({"name": self.names[-1]})


def _unauthenticated() -> web.Response:
    """Google's answer to a missing, expired or revoked OAuth2 access token."""
    body = {"error": {"code": 401, "status": "UNAUTHENTICATED",
                      "message": "Request had invalid authentication credentials. Expected "
                      "OAuth 2 access token, login cookie or other valid authentication "
                      "credential."}}  # fmt: skip
    challenge = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})


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
