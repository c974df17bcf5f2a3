"""The ``Idempotency-Key`` header: replay the first answer, refuse reuse and races.

Same key, same body: the first answer again, with ``Idempotent-Replayed: true``. Same key,
other body: 422. The first request with that key still in flight: 409 with Retry-After.
The body's fingerprint is taken after decoding, so formatting differences do not matter.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from pulse.core.errors import InvalidInput, Unavailable
from pulse.http.problems import problem
from pulse.http.state import IDEMPOTENCY, TENANT_ID
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.idempotency import Answer, Existing, IdempotencyStore
from pulse.store.tenants import Connection

HEADER = "Idempotency-Key"
Remember = Callable[[Connection, datetime], Awaitable[None]]
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Started:
    """This request owns its key until it remembers an answer or releases the key."""

    store: IdempotencyStore
    tenant_id: str
    key: str

    async def release(self) -> None:
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):  # else it goes stale, to be taken over
            await self.store.release(self.tenant_id, self.key)


async def idempotent_start(request: web.Request, canonical: bytes) -> Started | web.Response | None:
    """None without the header; a response to send as it is (replay or conflict); else the
    key is this request's."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable characters")
    store = request.app[IDEMPOTENCY]
    tenant_id = request[TENANT_ID]
    try:
        claimed = await store.claim(tenant_id, key, hashlib.sha256(canonical).digest())
    except TRANSIENT_DB_ERRORS:
        raise Unavailable("the database is unreachable; nothing was accepted") from None
    if isinstance(claimed, Existing):
        return _existing(claimed, request.path)
    return Started(store, tenant_id, key)


def _existing(existing: Existing, path: str) -> web.Response:
    if not existing.same_body:
        return problem(422, f"this {HEADER} was used with a different request body", instance=path)
    if existing.in_flight or existing.status is None or existing.body is None:
        return problem(
            409,
            f"a request with this {HEADER} is still being processed",
            instance=path,
            headers={"Retry-After": "1"},
        )
    replay = answer(existing.status, existing.body, existing.location)
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


def remember_answer(
    started: Started | None, render: Callable[[datetime], bytes], location: str
) -> Remember | None:
    """What the notification's transaction runs to store the answer with the key."""
    if started is None:
        return None

    async def remember(conn: Connection, created_at: datetime) -> None:
        stored = Answer(status=202, body=render(created_at), location=location)
        await IdempotencyStore.remember(conn, started.tenant_id, started.key, stored)

    return remember


def answer(status: int, body: bytes, location: str | None) -> web.Response:
    headers = {"Location": location} if location else None
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
