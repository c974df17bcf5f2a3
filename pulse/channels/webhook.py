"""Webhooks signed per the Standard Webhooks specification, behind an SSRF guard.

Each delivery is a JSON POST ``{"type", "timestamp", "data"}`` carrying ``webhook-id`` (the
notification id: the same on every retry, so receivers can deduplicate), ``webhook-timestamp``
(this attempt's time) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of
``id.timestamp.body`` under each secret in force: the tenant's own, and during a rotation the
previous one too). The body's ``timestamp`` is the event's time (when Pulse accepted the
notification, the time inside its UUIDv7 id), so one ``webhook-id`` always carries one body.

2xx is delivered, 410 is permanent (the receiver says: never again), anything else is retried,
with the receiver's Retry-After when it gives one. Redirects are the endpoint's answer, never
followed (a public endpoint could otherwise point Pulse at an inward address): 301 and 308 (moved
for good) are permanent failures, other 3xx are retried. Where Pulse may connect is decided by
``pulse.channels.guard``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import msgspec
from multidict import CIMultiDictProxy
from yarl import URL

from pulse import tracing
from pulse.channels.guard import GuardedResolver, RefusedAddress, guarded_socket, host_refusal
from pulse.core.ids import uuid7_ms
from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.retry_after import retry_after_seconds
from pulse.core.signatures import webhook_signature

RESPONSE_KEPT = 500  # characters of an answer kept on the attempt row
RESPONSE_READ_BYTES = 4 * RESPONSE_KEPT  # UTF-8 takes at most 4 bytes a character


class WebhookPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    data: dict[str, Any]


def check_url(value: str, allow_http: bool = False, allow_private: bool = False) -> str:
    """An absolute https URL (http too if allowed) whose host, when an IP literal, is one the
    guard lets Pulse reach (any, if allowed); parsed as aiohttp will parse it."""
    schemes = ("https", "http") if allow_http else ("https",)
    try:
        url = URL(value)
    except (ValueError, TypeError):
        url = URL()
    if url.scheme not in schemes or not url.host:
        raise ValueError(f"{value!r} is not an {' or '.join(schemes)} URL")
    refused = None if allow_private else host_refusal(url.host)
    if refused is not None:
        raise ValueError(f"{value!r} points at a {refused}, which Pulse does not call")
    return value


WEBHOOK_SPEC = ChannelSpec(name="webhook", payload_type=WebhookPayload, check_recipient=check_url)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    allow_http: bool = False
    allow_private: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


SecretsFor = Callable[[Envelope], Sequence[str]]
NOT_CONFIGURED = "no signing secret is configured"


class WebhookChannel:
    """Signs with what ``secrets_for`` answers for the envelope (the tenant's secrets in force);
    without it, or when it answers none, nothing is sent."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        spec: ChannelSpec = WEBHOOK_SPEC,
        secrets_for: SecretsFor | None = None,
        not_configured: str = NOT_CONFIGURED,
    ) -> None:
        self._config = config
        self.spec = spec
        self._secrets_for = secrets_for or (lambda envelope: [])
        self._not_configured = not_configured
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        guarded = not self._config.allow_private
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._config.connect_timeout_s, sock_read=self._config.read_timeout_s
        )
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver() if guarded else None,
            socket_factory=guarded_socket if guarded else None,
        )
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, envelope: Envelope) -> Outcome:
        refused = self._refusal(envelope.recipient)
        if refused is not None:
            return refused
        secrets = self._secrets_for(envelope)
        if not secrets:
            return Retry(error=self._not_configured, error_class="NotConfigured")
        if self._session is None:
            await self.start()
        assert self._session is not None
        return await self._post(self._session, envelope, secrets)

    def _refusal(self, recipient: str) -> Failed | None:
        """A URL that was valid at accept time may not be any more (settings changed)."""
        try:
            check_url(recipient, self._config.allow_http, allow_private=True)
        except ValueError as exc:
            return Failed(error=str(exc), error_class="InvalidURL")
        if self._config.allow_private:
            return None
        reason = host_refusal(URL(recipient).host or "")
        return (
            None if reason is None else Failed(error=f"refused: {reason}", error_class="SSRFGuard")
        )

    async def _post(
        self, session: aiohttp.ClientSession, envelope: Envelope, secrets: Sequence[str]
    ) -> Outcome:
        payload: WebhookPayload = envelope.payload
        body = msgspec.json.encode(
            {"type": payload.type, "timestamp": _event_time(envelope), "data": payload.data}
        )
        attempt_time = int(time.time())
        try:
            signature = " ".join(
                webhook_signature(secret, envelope.notification_id, attempt_time, body)
                for secret in secrets
            )
        except ValueError as exc:  # never sign with an empty or malformed key
            return Retry(error=f"unusable signing secret: {exc}", error_class="NotConfigured")
        headers = {
            "content-type": "application/json",
            "webhook-id": envelope.notification_id,
            "webhook-timestamp": str(attempt_time),
            "webhook-signature": signature,
            **tracing.outgoing_headers(),  # traceparent: the receiver may join the trace
        }
        try:
            async with session.post(
                envelope.recipient, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await _head(response)
                return _classify(response.status, response.headers, text)
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, RefusedAddress) else None
            if refused is not None or isinstance(exc.__cause__, RefusedAddress):
                return Failed(error=f"refused: {refused or exc.__cause__}", error_class="SSRFGuard")
            return _unreachable(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _unreachable(exc)


async def _head(response: aiohttp.ClientResponse) -> str:
    """The first ``RESPONSE_KEPT`` characters of an answer, reading no more than a few times
    that: an endpoint is the tenant's, and may answer with an endless body."""
    data = bytearray()
    while len(data) < RESPONSE_READ_BYTES:
        chunk = await response.content.read(RESPONSE_READ_BYTES - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", errors="replace")[:RESPONSE_KEPT]


def _event_time(envelope: Envelope) -> int:
    """When the event happened, in Unix seconds: the time inside the notification's UUIDv7 id
    (set when Pulse accepted it), so every retry carries the same body. An id of another kind
    (Pulse makes none) falls back to now."""
    try:
        made_ms = uuid7_ms(envelope.notification_id)
    except ValueError:
        made_ms = None
    return int(time.time()) if made_ms is None else made_ms // 1000


def _unreachable(exc: BaseException) -> Retry:
    """An endpoint that cannot be reached is its receiver's trouble, not a provider's."""
    name = type(exc).__name__
    return Retry(error=f"{name}: {exc}", error_class=name, provider_fault=False)


PERMANENT_REDIRECTS = frozenset({301, 308})  # moved for good: retrying the same URL cannot help


def _classify(status: int, headers: CIMultiDictProxy[str], text: str) -> Outcome:
    response = f"{status} {text}".strip()
    if 200 <= status < 300:
        return Delivered(response=response)
    if status == 410:
        return Failed(error=f"HTTP 410: {text}", error_class="HTTP410", response=response)
    if 300 <= status < 400:
        return _redirected(status, headers.get("Location", ""), response)
    after = retry_after_seconds(headers.get("Retry-After"))
    return Retry(
        error=f"HTTP {status}",
        after_s=after,
        error_class=f"HTTP{status}",
        response=response,
        provider_fault=False,  # each endpoint is its receiver's own, not a shared provider
    )


def _redirected(status: int, location: str, response: str) -> Outcome:
    """A redirect is the endpoint's answer: Pulse does not follow it (the next hop could be an
    inward address); the endpoint's URL must be the final one."""
    error = f"HTTP {status}: redirects are not followed (Location: {location[:200]})"
    if status in PERMANENT_REDIRECTS:
        return Failed(error=error, error_class=f"HTTP{status}", response=response)
    return Retry(error=error, error_class=f"HTTP{status}", response=response, provider_fault=False)
