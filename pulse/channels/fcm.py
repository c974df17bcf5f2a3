"""Push through Firebase Cloud Messaging's HTTP v1 API.

``POST {base}/v1/projects/{project_id}/messages:send`` with an OAuth2 access token, obtained
from the service account by a signed RS256 JWT grant (PyJWT) at the account's ``token_uri``
and cached until shortly before it expires. A 401 (the token revoked or expired early) drops
the cached token and sends once more with a fresh one, as the official SDK's transport does
(google-auth's AuthorizedSession refreshes on 401); a fresh token refused too is the account's
fault, retried later. UNREGISTERED and INVALID_ARGUMENT are permanent; QUOTA_EXCEEDED,
UNAVAILABLE and INTERNAL are retried (after Retry-After when given).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import jwt
import msgspec

from pulse import tracing
from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.retry_after import retry_after_seconds

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_MARGIN_S = 60
PERMANENT = frozenset({"UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "NOT_FOUND"})
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
_TOPIC = re.compile(r"^/topics/[A-Za-z0-9\-_.~%]{1,900}$")


class PushPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    body: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    data: dict[str, str] | None = None


def check_target(value: str) -> str:
    """A registration token, or a topic as ``/topics/name``."""
    if not (_TOKEN.match(value) or _TOPIC.match(value)):
        raise ValueError(f"{value[:40]!r} is neither an FCM registration token nor /topics/NAME")
    return value


PUSH_SPEC = ChannelSpec(
    name="push", payload_type=PushPayload, check_recipient=check_target, provider_kind="fcm"
)


class ServiceAccount(msgspec.Struct, kw_only=True):
    project_id: str
    private_key: str
    client_email: str
    token_uri: str = "https://oauth2.googleapis.com/token"
    private_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class FcmConfig:
    account: ServiceAccount | None
    base_url: str = "https://fcm.googleapis.com"
    timeout_s: float = 15.0


class FcmChannel:
    spec = PUSH_SPEC

    def __init__(self, config: FcmConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None  # (access token, expires at)
        self._token_lock = asyncio.Lock()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_s)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, envelope: Envelope) -> Outcome:
        account = self._config.account
        if account is None:
            return Retry(error="FCM is not configured (PULSE_FCM_*)", error_class="NotConfigured")
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            return await self._deliver(self._session, account, envelope)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
        except TokenRefused as exc:
            return Retry(error=str(exc), error_class="OAuth2")

    async def _deliver(
        self, session: aiohttp.ClientSession, account: ServiceAccount, envelope: Envelope
    ) -> Outcome:
        token = await self._access_token(session, account)
        answer = await self._post(session, account, token, envelope)
        if answer.status == 401:  # nothing was sent: a fresh token, and one more try
            self._drop_token(token)
            token = await self._access_token(session, account)
            answer = await self._post(session, account, token, envelope)
        return _classify(answer.status, answer.retry_after, answer.text)

    def _drop_token(self, token: str) -> None:
        """Forget a refused token, unless a concurrent send already replaced it."""
        if self._token is not None and self._token[0] == token:
            self._token = None

    async def _access_token(self, session: aiohttp.ClientSession, account: ServiceAccount) -> str:
        async with self._token_lock:
            if self._token is not None and self._token[1] > time.time():
                return self._token[0]
            now = int(time.time())
            claims = {"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
                      "iat": now, "exp": now + 3600}  # fmt: skip
            headers = {"kid": account.private_key_id} if account.private_key_id else None
            assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
            form = {"grant_type": GRANT_TYPE, "assertion": assertion}
            async with session.post(account.token_uri, data=form) as response:
                if response.status != 200:
                    raise TokenRefused(f"token endpoint answered {response.status}")
                granted = await response.json()
            expires_in = float(granted.get("expires_in", 3600))
            self._token = (granted["access_token"], now + expires_in - TOKEN_MARGIN_S)
            return self._token[0]

    async def _post(
        self,
        session: aiohttp.ClientSession,
        account: ServiceAccount,
        token: str,
        envelope: Envelope,
    ) -> Answer:
        url = f"{self._config.base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        headers = {"Authorization": f"Bearer {token}", **tracing.outgoing_headers()}
        async with session.post(url, json=_message(envelope), headers=headers) as response:
            text = await response.text()
            return Answer(response.status, response.headers.get("Retry-After"), text)


@dataclass(frozen=True, slots=True)
class Answer:
    """FCM's answer to one messages:send request."""

    status: int
    retry_after: str | None
    text: str


class TokenRefused(Exception):
    """The OAuth2 token endpoint did not grant an access token."""


def _message(envelope: Envelope) -> dict[str, Any]:
    payload: PushPayload = envelope.payload
    message: dict[str, Any] = {"notification": {"title": payload.title, "body": payload.body}}
    if envelope.recipient.startswith("/topics/"):
        message["topic"] = envelope.recipient.removeprefix("/topics/")
    else:
        message["token"] = envelope.recipient
    message["data"] = (payload.data or {}) | {"pulse_id": envelope.notification_id}
    return {"message": message}


def _classify(status: int, retry_after: str | None, text: str) -> Outcome:
    if 200 <= status < 300:
        return Delivered(provider_id=_message_name(text), response=f"{status}")
    code = _error_code(text) or f"HTTP{status}"
    error = f"FCM {status} {code}"
    if _permanent(status, code):
        return Failed(error=error, error_class=code, response=text[:500])
    after = retry_after_seconds(retry_after)
    return Retry(error=error, after_s=after, error_class=code, response=text[:500])


def _permanent(status: int, code: str) -> bool:
    """About the message (a gone token, a bad field), so no retry can help. Throttling and
    timeouts are not, nor is a 401 with a fresh token: the account's credentials are at fault
    (and fixing them must not have cost the messages sent meanwhile)."""
    if code in PERMANENT:
        return True
    return 400 <= status < 500 and status not in (401, 408, 429)


def _message_name(text: str) -> str | None:
    """The sent message's name (``projects/P/messages/ID``); a 2xx is delivered whatever its
    body says, so an odd body must not turn it into a retry (and a second push)."""
    try:
        name = msgspec.json.decode(text).get("name")
    except (msgspec.DecodeError, AttributeError):
        return None
    return str(name) if name else None


def _error_code(text: str) -> str | None:
    """FCM's own errorCode from the error details, else the RPC status."""
    try:
        error = msgspec.json.decode(text).get("error", {})
    except (msgspec.DecodeError, AttributeError):
        return None
    for detail in error.get("details", []):
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    status = error.get("status")
    return str(status) if status else None
