"""The ``Idempotency-Key`` header, and answers as the accept service gives them.

Same key, same request: the first answer again, with ``Idempotent-Replayed: true``. Same key,
another request: 422. The first request with that key still in flight: 409 with Retry-After.
The claim, the stored answer and the fingerprint belong to ``pulse.services.accept``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pulse.core.errors import InvalidInput
from pulse.services.accept import Answer, IdempotencyKey, fingerprint

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def idempotency_key(request: web.Request, decoded: Any) -> IdempotencyKey | None:
    """The request's key with the fingerprint of its decoded body; None without the header."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable characters")
    return IdempotencyKey(key, fingerprint(decoded))


def render(answer: Answer) -> web.Response:
    headers = {"Location": answer.location} if answer.location else {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(
        status=answer.status, body=answer.body, content_type="application/json", headers=headers
    )
