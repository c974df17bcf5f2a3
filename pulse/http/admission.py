"""Ingress admission of an accept that may carry an Idempotency-Key.

A replay of an answered key is not new work, so the limiter never refuses it: only when the
limiter says 429 is the key looked up (the common path costs nothing more), and a remembered
answer is replayed instead. A key still in flight, or never answered, keeps the 429.
"""

from __future__ import annotations

from aiohttp import web

from pulse.core.errors import RateLimited
from pulse.http.idempotency import render
from pulse.http.limits import admit
from pulse.http.state import IDEMPOTENCY, TENANT_ID
from pulse.services.accept import IdempotencyKey
from pulse.services.answers import replay
from pulse.store.idempotency import Existing


async def admit_or_replay(
    request: web.Request, cost: int, key: IdempotencyKey | None, pointer: str = "$"
) -> dict[str, str] | web.Response:
    """The limit headers of an admitted request, or the remembered answer of its key when the
    limiter refused it; RateLimited otherwise."""
    try:
        return await admit(request, cost, pointer)
    except RateLimited as refused:
        if key is None:
            raise
        store = request.app[IDEMPOTENCY]
        async with store.claim(request[TENANT_ID], key.value, key.fingerprint) as claim:
            if not isinstance(claim, Existing):
                raise  # nothing answered yet: the limit holds
            answer = render(replay(claim))
        answer.headers.update(refused.headers)
        return answer
