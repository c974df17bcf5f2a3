"""Request signatures of the providers Pulse talks to, as pure functions (shared by the
channels that sign and the endpoints that verify)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


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
