"""Bearer API keys: every ``/api/`` request resolves to exactly one tenant or gets a 401.

Resolved keys are cached in each API process (``key_cache``), revocations staying immediate.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from pulse.core.errors import Forbidden, NotFound
from pulse.http.problems import Handler, problem
from pulse.http.state import KEY_ID, PRINCIPAL, REDIS, SETTINGS, TENANT_ID, TENANTS
from pulse.queue.client import open_configured
from pulse.queue.keys import keys_for
from pulse.queue.revocations import Revocations
from pulse.store.key_cache import KeyCache
from pulse.store.tenants import Principal

PROTECTED_PREFIX = "/api/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pulse"'}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PROTECTED_PREFIX):
        return await handler(request)
    key = bearer_key(request)
    if key is None:
        return problem(401, "send an API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    principal = await request.app[TENANTS].principal(key)
    if principal is None:
        return problem(401, "unknown or revoked API key", headers=_CHALLENGE)
    request[TENANT_ID] = principal.tenant_id
    request[KEY_ID] = principal.key_id
    request[PRINCIPAL] = principal
    return await handler(request)


def bearer_key(request: web.Request) -> str | None:
    """The request's ``Authorization: Bearer`` key, or None when there is none that could be
    one: keys are ASCII tokens; other bytes arrive as surrogates and could not be digested."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or not key.isascii() or not key.isprintable():
        return None
    return key


def require(request: web.Request, scope: str) -> None:
    """Refuse (403) a key without ``scope``: send, read or admin."""
    if scope not in request[PRINCIPAL].scopes:
        raise Forbidden(f"this API key lacks the '{scope}' scope")


def require_operator(request: web.Request) -> None:
    require(request, "admin")
    if not request[PRINCIPAL].operator:
        raise Forbidden("only an operator tenant's admin key may manage tenants")


def operated_tenant(request: web.Request) -> str:
    """The tenant id an operator's call names in its path (``/api/tenants/{id}/...``); an id
    that is not one answers 404, as an unknown tenant does."""
    require_operator(request)
    raw = request.match_info["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no tenant {raw}") from None


async def key_cache(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, after the one opening the backends: cache resolved keys while a
    subscription to revocations keeps the cache truthful (pulse/queue/revocations.py)."""
    settings = app[SETTINGS]
    if settings.api_key_cache_size == 0:
        yield
        return
    cache: KeyCache[Principal] = KeyCache(settings.api_key_cache_size, settings.api_key_cache_ttl_s)
    subscriber = open_configured(settings, blocking_reads=True)
    revocations = Revocations(app[REDIS], subscriber, keys_for(settings))
    app[TENANTS].use_cache(cache, revocations.announce)
    following = asyncio.create_task(revocations.follow(cache))
    try:
        yield
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await subscriber.aclose()
