"""Webhooks signed per the Standard Webhooks specification, with an SSRF guard.

Each delivery is a JSON POST carrying ``webhook-id`` (the notification id: the same on every
retry, so receivers can deduplicate), ``webhook-timestamp`` and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the ``whsec_`` secret). 2xx is
delivered, 410 is permanent (the receiver says: never again), anything else is retried, with
the receiver's Retry-After when it gives one.

The guard resolves the host itself and connects only to the addresses it vetted, so neither a
hostname pointing inward nor DNS rebinding reaches loopback, private or link-local networks
unless configuration allows them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.retry_after import retry_after_seconds

SECRET_PREFIX = "whsec_"


class WebhookPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    data: dict[str, Any]


def check_url(value: str, allow_http: bool = False) -> str:
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{value!r} is not an {' or '.join(schemes)} URL")
    return value


WEBHOOK_SPEC = ChannelSpec(name="webhook", payload_type=WebhookPayload, check_recipient=check_url)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one delivery."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class RefusedAddress(OSError):
    """The webhook's host resolves to a network Pulse must not reach."""


def forbidden(address: str) -> str | None:
    """Why ``address`` may not be called, or None when it is a public address."""
    ip = ipaddress.ip_address(address)
    for label, hit in (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    ):
        if hit:
            return f"{label} address {address}"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses inward-pointing answers."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = forbidden(result["host"])
            if reason is not None:
                raise RefusedAddress(f"{host} resolves to a {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    secret: str
    allow_http: bool = False
    allow_private: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


SecretsFor = Callable[[Envelope], Sequence[str]]


class WebhookChannel:
    """Signs with ``config.secret``, or with what ``secrets_for`` answers for the envelope (a
    tenant's receipt secrets: during a rotation, the new and the previous one)."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        spec: ChannelSpec = WEBHOOK_SPEC,
        secrets_for: SecretsFor | None = None,
    ) -> None:
        self._config = config
        self.spec = spec
        self._secrets_for = secrets_for or (lambda envelope: [config.secret])
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        resolver = None if self._config.allow_private else GuardedResolver()
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._config.connect_timeout_s, sock_read=self._config.read_timeout_s
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(resolver=resolver)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, envelope: Envelope) -> Outcome:
        try:
            check_url(envelope.recipient, self._config.allow_http)
        except ValueError as exc:
            return Failed(error=str(exc), error_class="InvalidURL")
        literal = _literal_refusal(envelope.recipient)
        if literal is not None and not self._config.allow_private:
            return Failed(error=f"refused: {literal}", error_class="SSRFGuard")
        secrets = self._secrets_for(envelope)
        if not secrets:
            return Retry(error="no signing secret is configured", error_class="NotConfigured")
        if self._session is None:
            await self.start()
        assert self._session is not None
        return await self._post(self._session, envelope, secrets)

    async def _post(
        self, session: aiohttp.ClientSession, envelope: Envelope, secrets: Sequence[str]
    ) -> Outcome:
        payload: WebhookPayload = envelope.payload
        timestamp = int(time.time())
        body = msgspec.json.encode(
            {"type": payload.type, "timestamp": timestamp, "data": payload.data}
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": envelope.notification_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                sign(secret, envelope.notification_id, timestamp, body) for secret in secrets
            ),
        }
        try:
            async with session.post(envelope.recipient, data=body, headers=headers) as response:
                text = (await response.text(errors="replace"))[:500]
                return _classify(response.status, response.headers.get("Retry-After"), text)
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, RefusedAddress) else None
            if refused is not None or isinstance(exc.__cause__, RefusedAddress):
                return Failed(error=f"refused: {refused or exc.__cause__}", error_class="SSRFGuard")
            return _unreachable(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _unreachable(exc)


def _unreachable(exc: BaseException) -> Retry:
    """An endpoint that cannot be reached is its receiver's trouble, not a provider's."""
    name = type(exc).__name__
    return Retry(error=f"{name}: {exc}", error_class=name, provider_fault=False)


def _literal_refusal(url: str) -> str | None:
    """aiohttp does not resolve an IP literal, so the guard checks it here."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return forbidden(host)


def _classify(status: int, retry_after: str | None, text: str) -> Outcome:
    response = f"{status} {text}".strip()
    if 200 <= status < 300:
        return Delivered(response=response)
    if status == 410:
        return Failed(error=f"HTTP 410: {text}", error_class="HTTP410", response=response)
    after = retry_after_seconds(retry_after)
    return Retry(
        error=f"HTTP {status}",
        after_s=after,
        error_class=f"HTTP{status}",
        response=response,
        provider_fault=False,  # each endpoint is its receiver's own, not a shared provider
    )
