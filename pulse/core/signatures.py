"""Request signatures of the providers Pulse talks to, as pure functions (shared by the
channels that sign and the endpoints that verify)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

TwilioParams = Mapping[str, str | Sequence[str]]  # a name may repeat: all its values
TWILIO_ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
_DEFAULT_PORTS = {"https": 443, "http": 80}


def twilio_signature(key: str, url: str, params: TwilioParams, algorithm: str = "HMAC_SHA1") -> str:
    """``X-Twilio-Signature``: base64 HMAC of the URL followed by each POST parameter's name
    and value, sorted by name (a repeated name: its distinct values, sorted). The key is the
    account's auth token, with SHA-1; or a Webhook Setting's shared key, with its algorithm."""
    data = url + "".join(name + value for name in sorted(params) for value in _values(params[name]))
    digest = hmac.new(key.encode(), data.encode(), TWILIO_ALGORITHMS[algorithm]).digest()
    return base64.b64encode(digest).decode()


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else sorted(set(value))


def twilio_url_forms(url: str) -> tuple[str, str]:
    """The URL with its port and without: Twilio signs either form, so its RequestValidator
    accepts both (the default port added when none is given; any port removed)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))
    port = _DEFAULT_PORTS.get(parts.scheme, 80)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}")), url


def valid_twilio_signature(
    key: str, url: str, params: TwilioParams, given: str, algorithm: str = "HMAC_SHA1"
) -> bool:
    """Whether ``given`` signs ``url`` (in either port form) and ``params`` with ``key``."""
    given_bytes = given.encode("utf-8", "replace")  # compare_digest refuses non-ASCII str
    return any(
        hmac.compare_digest(twilio_signature(key, form, params, algorithm).encode(), given_bytes)
        for form in twilio_url_forms(url)
    )


def twilio_signature_algorithm(settings_header: str) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings``
    (``key=<SharedKey id>,algorithm=HMAC_SHA256``): Twilio sends it when a Webhook Rule makes
    a Setting's shared key sign instead of the auth token. Only the hash changes; the signed
    text is the same. Empty when it names none."""
    pairs = (part.strip().partition("=") for part in settings_header.split(","))
    return next((value.strip() for name, _, value in pairs if name == "algorithm"), "")


# Standard Webhooks: a signing secret is ``whsec_`` + the base64 key; the signature header holds
# one ``v1,<base64 HMAC-SHA256>`` per secret in force, separated by spaces.
SECRET_PREFIX = "whsec_"
ROTATION_GRACE = timedelta(hours=24)  # the previous secret keeps signing this long
RECEIPTS = "pulse-receipts"  # what a derived secret is for: one tenant's secrets never
WEBHOOKS = "pulse-webhooks"  # sign both its receipts and its webhooks


@dataclass(frozen=True, slots=True)
class SecretGeneration:
    """Which of a tenant's derived secrets is current (1 until the first rotation), and when
    it last rotated (the previous one signs too until ``ROTATION_GRACE`` after that)."""

    generation: int = 1
    rotated_at: datetime | None = None

    def previous_until(self, now: datetime) -> datetime | None:
        """Until when the previous secret still signs, or None when it no longer does."""
        if self.generation < 2 or self.rotated_at is None:
            return None
        until = self.rotated_at + ROTATION_GRACE
        return until if now < until else None


def tenant_secret(signing_key: str, purpose: str, tenant_id: str, generation: int) -> str:
    """A tenant's signing secret (``whsec_`` form) for ``purpose``, derived from the
    deployment's key: nothing secret is stored, and rotating is bumping ``generation``."""
    message = f"{purpose}:{tenant_id}:{generation}".encode()
    derived = hmac.new(signing_key.encode(), message, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(derived).decode()


def receipt_secret(signing_key: str, tenant_id: str, generation: int) -> str:
    return tenant_secret(signing_key, RECEIPTS, tenant_id, generation)


def secrets_in_force(
    signing_key: str, purpose: str, tenant_id: str, state: SecretGeneration, now: datetime
) -> list[str]:
    """The secrets a delivery is signed with: the current one, and during a rotation's grace
    period the previous one too (receivers may check either)."""
    secrets = [tenant_secret(signing_key, purpose, tenant_id, state.generation)]
    if state.previous_until(now) is not None:
        secrets.append(tenant_secret(signing_key, purpose, tenant_id, state.generation - 1))
    return secrets


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError when it is not base64 or is empty (an
    empty key signs nothing anyone could not forge)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not a whsec_<base64> secret: {exc}") from None
    if not key:
        raise ValueError("an empty signing key")
    return key


def webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
