"""Request signatures of the providers Pulse talks to, as pure functions (shared by the
channels that sign and the endpoints that verify)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import timedelta
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


RECEIPT_SECRET_PREFIX = "whsec_"
RECEIPT_ROTATION_GRACE = timedelta(hours=24)  # the previous secret keeps signing this long


def receipt_secret(signing_key: str, tenant_id: str, generation: int) -> str:
    """A tenant's receipt signing secret (Standard Webhooks ``whsec_`` form), derived from the
    deployment's key: nothing secret is stored, and rotating is bumping ``generation``."""
    message = f"pulse-receipts:{tenant_id}:{generation}".encode()
    derived = hmac.new(signing_key.encode(), message, hashlib.sha256).digest()
    return RECEIPT_SECRET_PREFIX + base64.b64encode(derived).decode()
