"""Request signatures of the providers Pulse talks to, as pure functions (shared by the
channels that sign and the endpoints that verify)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL followed by each POST parameter's
    name and value, sorted by name."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], given: str
) -> bool:
    return hmac.compare_digest(twilio_signature(auth_token, url, params), given)


RECEIPT_SECRET_PREFIX = "whsec_"
RECEIPT_ROTATION_GRACE = timedelta(hours=24)  # the previous secret keeps signing this long


def receipt_secret(signing_key: str, tenant_id: str, generation: int) -> str:
    """A tenant's receipt signing secret (Standard Webhooks ``whsec_`` form), derived from the
    deployment's key: nothing secret is stored, and rotating is bumping ``generation``."""
    message = f"pulse-receipts:{tenant_id}:{generation}".encode()
    derived = hmac.new(signing_key.encode(), message, hashlib.sha256).digest()
    return RECEIPT_SECRET_PREFIX + base64.b64encode(derived).decode()
