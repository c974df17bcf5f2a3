"""Ingress rate limits: every accept is admitted by its tenant's and its key's limit first.

Over a limit the answer is 429 problem+json with ``Retry-After``; nothing is accepted (a batch
counts its items, all or nothing). Every answer of a limited endpoint carries the limits' state
in the ``RateLimit-Policy`` and ``RateLimit`` fields of draft-ietf-httpapi-ratelimit-headers
(structured-field lists, one item per limit: ``"tenant";q=100;w=2`` and
``"tenant";r=37;t=1``). Limits are set per tenant by an operator (``/api/tenants/{id}/limits``),
the rest from the environment.

Should Redis be unreachable the limiter lets requests through (fail-open, counted in
``pulse_rate_limiter_unavailable_total``): it protects capacity, and an accept needs Redis
anyway, answering 503 by itself when it is truly gone; failing closed would turn a limiter
hiccup into refusals of work Pulse could take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from pulse.config import Settings
from pulse.core.errors import ConfigError, InvalidInput, NotFound, RateLimited
from pulse.core.limits import LimitOverrides, Rate, TenantLimits, effective, rate_problem
from pulse.http.auth import operated_tenant
from pulse.http.body import read_json
from pulse.http.responses import json_response
from pulse.http.state import KEY_ID, METRICS, POOL, REDIS, SETTINGS, TENANT_ID
from pulse.metrics import Metrics
from pulse.queue.client import open_configured
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import keys_for
from pulse.queue.limiter import Admission, Limit, LimitState, RateLimiter
from pulse.queue.revocations import Revocations
from pulse.store.limits import LimitCache, LimitStore

logger = logging.getLogger("pulse.http.limits")
routes = web.RouteTableDef()
CHANGES_CHANNEL = "limit-changes"
QUIET_S = 10.0  # one warning per this long while Redis cannot be asked

PerSecond = Annotated[
    float,
    msgspec.Meta(
        ge=0, le=1_000_000, description="0 (off) or from 1/86400 (one a day) to 1000000 a second"
    ),
]
Burst = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


class LimitsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A tenant's limits; a field left out or null follows the deployment's default, a rate of
    0 turns that limit off. A burst is how many notifications may arrive at once."""

    rate_per_s: PerSecond | None = None
    burst: Burst | None = None
    key_rate_per_s: PerSecond | None = None
    key_burst: Burst | None = None


class RateDocument(msgspec.Struct, kw_only=True):
    per_s: float
    burst: int


class EffectiveLimits(msgspec.Struct, kw_only=True):
    tenant: RateDocument | None  # None: off
    key: RateDocument | None  # each API key's own limit; None: off


class LimitsDocument(LimitsRequest, kw_only=True):
    tenant_id: str
    updated_at: datetime | None  # None: never set (the defaults are in force)
    effective: EffectiveLimits  # what is in force, defaults included


class Ingress:
    """Admits accepts: looks the tenant's limits up (cached) and asks the limiter."""

    def __init__(
        self, cache: LimitCache, limiter: RateLimiter, defaults: LimitOverrides, metrics: Metrics
    ) -> None:
        self.cache = cache
        self._limiter = limiter
        self._defaults = defaults
        self._metrics = metrics
        self._warned_at = -QUIET_S
        self.announce: Callable[[], Awaitable[object]] | None = None

    async def limits(self, tenant_id: str) -> TenantLimits:
        return effective(await self.cache.get(tenant_id), self._defaults)

    async def admit(self, tenant_id: str, key_id: str, cost: int, pointer: str) -> dict[str, str]:
        """The limit headers of an admitted request; RateLimited when it is over a limit."""
        in_force = await self.limits(tenant_id)
        limits = _checked(in_force, tenant_id, key_id, cost, pointer)
        if not limits:
            return {}
        try:
            admission = await self._limiter.admit(limits, cost, time.time() * 1000)
        except TRANSIENT_REDIS_ERRORS as exc:
            self._fail_open(exc)
            return {}
        headers = limit_headers(admission.states)
        if not admission.admitted:
            raise self._refused(admission, headers, cost)
        return headers

    def _refused(self, admission: Admission, headers: dict[str, str], cost: int) -> RateLimited:
        binding = min(admission.states, key=lambda state: state.remaining)
        self._metrics.rate_limited.labels(binding.limit.name).inc()
        what = "request" if cost == 1 else f"request of {cost} items"
        return RateLimited(
            f"over the {binding.limit.name}'s rate limit ({_describe(binding.limit.rate)}):"
            f" this {what} was not accepted; retry after Retry-After",
            retry_after_s=max(1, math.ceil(admission.retry_after_ms / 1000)),
            headers=headers,
        )

    def _fail_open(self, exc: BaseException) -> None:
        self._metrics.limiter_unavailable.inc()
        now = time.monotonic()
        if now - self._warned_at >= QUIET_S:
            self._warned_at = now
            logger.warning("rate limiter unreachable (%s): requests pass unlimited meanwhile", exc)


INGRESS = web.AppKey("ingress", Ingress)


def _checked(
    in_force: TenantLimits, tenant_id: str, key_id: str, cost: int, pointer: str
) -> list[Limit]:
    """The limits to ask; a batch larger than a limit's whole burst could never be admitted,
    so it is a 422 (retrying cannot help), not a 429."""
    limits = []
    if in_force.tenant is not None:
        limits.append(Limit("tenant", tenant_id, in_force.tenant))
    if in_force.key is not None:
        limits.append(Limit("key", key_id, in_force.key))
    for limit in limits:
        if cost > limit.rate.burst:
            raise InvalidInput(
                f"{cost} items at once exceed the {limit.name}'s burst of"
                f" {limit.rate.burst}: send smaller batches",
                pointer,
            )
    return limits


def _describe(rate: Rate) -> str:
    return f"{rate.per_s:g}/s, burst {rate.burst}"


def limit_headers(states: tuple[LimitState, ...]) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers): per
    limit its quota ``q`` (the burst) over window ``w`` (seconds to refill it whole), and what
    remains ``r`` with ``t`` seconds until it is whole again."""
    policy = ", ".join(
        f'"{s.limit.name}";q={s.limit.rate.burst};w={s.limit.rate.window_s}' for s in states
    )
    current = ", ".join(
        f'"{s.limit.name}";r={s.remaining};t={math.ceil(s.reset_ms / 1000)}' for s in states
    )
    return {"RateLimit-Policy": policy, "RateLimit": current} if states else {}


async def admit(request: web.Request, cost: int, pointer: str = "$") -> dict[str, str]:
    """Admit ``cost`` notifications of this request's tenant and key (see ``Ingress``)."""
    ingress = request.app[INGRESS]
    return await ingress.admit(request[TENANT_ID], request[KEY_ID], cost, pointer)


def defaults(settings: Settings) -> LimitOverrides:
    """The deployment's default limits; a rate out of bounds stops start-up naming it."""
    for variable, per_s in (
        ("PULSE_RATE_LIMIT_PER_S", settings.rate_limit_per_s),
        ("PULSE_KEY_RATE_LIMIT_PER_S", settings.key_rate_limit_per_s),
    ):
        if problem := rate_problem(per_s):
            raise ConfigError(f"{variable}={per_s!r}: {problem}")
    return LimitOverrides(
        rate_per_s=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst or None,
        key_rate_per_s=settings.key_rate_limit_per_s,
        key_burst=settings.key_rate_limit_burst or None,
    )


async def rate_limits(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, after the one opening the backends: the limiter and each process's
    cache of tenants' limits, emptied whenever any process changes one."""
    settings = app[SETTINGS]
    keys = keys_for(settings)
    cache = LimitCache(LimitStore(app[POOL]), settings.limits_refresh_s)
    ingress = Ingress(cache, RateLimiter(app[REDIS], keys), defaults(settings), app[METRICS])
    subscriber = open_configured(settings, blocking_reads=True)
    changes = Revocations(app[REDIS], subscriber, keys, channel=CHANGES_CHANNEL)
    ingress.announce = changes.announce
    app[INGRESS] = ingress
    following = asyncio.create_task(changes.follow(cache))
    try:
        yield
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await subscriber.aclose()


async def _document(request: web.Request, tenant_id: str) -> web.Response:
    found = await LimitStore(request.app[POOL]).get(tenant_id)
    if found is None:
        raise NotFound(f"no tenant {tenant_id}")
    overrides, updated_at = found
    in_force = effective(overrides, defaults(request.app[SETTINGS]))
    return json_response(
        LimitsDocument(
            rate_per_s=overrides.rate_per_s,
            burst=overrides.burst,
            key_rate_per_s=overrides.key_rate_per_s,
            key_burst=overrides.key_burst,
            tenant_id=tenant_id,
            updated_at=updated_at,
            effective=EffectiveLimits(tenant=_rate(in_force.tenant), key=_rate(in_force.key)),
        )
    )


def _rate(rate: Rate | None) -> RateDocument | None:
    return None if rate is None else RateDocument(per_s=rate.per_s, burst=rate.burst)


@routes.get("/api/tenants/{id}/limits")
async def get_limits(request: web.Request) -> web.Response:
    return await _document(request, operated_tenant(request))


@routes.put("/api/tenants/{id}/limits")
async def put_limits(request: web.Request) -> web.Response:
    tenant_id = operated_tenant(request)
    body = await read_json(request, LimitsRequest)
    for field in ("rate_per_s", "key_rate_per_s"):
        per_s = getattr(body, field)
        if per_s is not None and (problem := rate_problem(per_s)):
            raise InvalidInput(f"{field}={per_s!r}: {problem}", f"$.{field}")
    overrides = LimitOverrides(body.rate_per_s, body.burst, body.key_rate_per_s, body.key_burst)
    if await LimitStore(request.app[POOL]).put(tenant_id, overrides) is None:
        raise NotFound(f"no tenant {tenant_id}")
    await _announce(request.app[INGRESS])
    return await _document(request, tenant_id)


async def _announce(ingress: Ingress) -> None:
    """Every API process forgets the limits it cached (this one at once); should Redis fail
    the announcement, the change still reaches each within ``PULSE_LIMITS_REFRESH_S``."""
    ingress.cache.clear()
    if ingress.announce is None:
        return
    try:
        await ingress.announce()
    except TRANSIENT_REDIS_ERRORS as exc:
        logger.warning("limits changed; could not tell the other API processes: %s", exc)
