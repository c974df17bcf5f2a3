"""Tenants' own rate limits (``tenant_limits``), and each API process's memory of them.

The cache answers a request's lookup from memory for ``ttl_s``; a change made through the API is
announced over Redis (pulse/queue/revocations.py, a channel of its own) and empties every
process's cache, so it is in force at once; should an announcement be missed, the entry ages
out within ``ttl_s``. Limits protect capacity, not secrets: an unreachable PostgreSQL keeps the
last limits read (or the defaults) in force rather than failing requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import asyncpg

from pulse.core.limits import LimitOverrides
from pulse.store.errors import TRANSIENT_DB_ERRORS

logger = logging.getLogger("pulse.store.limits")
_COLUMNS = "rate_per_s, burst, key_rate_per_s, key_burst"

_PUT = f"""
INSERT INTO tenant_limits (tenant_id, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE
   SET ({_COLUMNS}, updated_at) = ($2, $3, $4, $5, now())
RETURNING updated_at
"""


class LimitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str) -> tuple[LimitOverrides, datetime | None] | None:
        """The tenant's overrides (all None when it has set none) and when they were last set;
        None when there is no such tenant."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS}, l.updated_at FROM tenants t"
            " LEFT JOIN tenant_limits l ON l.tenant_id = t.id WHERE t.id = $1",
            tenant_id,
        )
        if row is None:
            return None
        return LimitOverrides(row[0], row[1], row[2], row[3]), row["updated_at"]

    async def put(self, tenant_id: str, limits: LimitOverrides) -> datetime | None:
        """Set the tenant's overrides; None when there is no such tenant."""
        values = (limits.rate_per_s, limits.burst, limits.key_rate_per_s, limits.key_burst)
        try:
            updated: datetime = await self._pool.fetchval(_PUT, tenant_id, *values)
        except asyncpg.ForeignKeyViolationError:
            return None
        return updated


class LimitCache:
    """Tenant id -> its overrides, each trusted for ``ttl_s`` (``clear`` forgets them all)."""

    def __init__(
        self, store: LimitStore, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, LimitOverrides]] = {}
        self.generation = 0
        self.live: Callable[[], bool] = lambda: False  # set by the announcements' follower

    async def get(self, tenant_id: str) -> LimitOverrides:
        found = self._entries.get(tenant_id)
        if found is not None and self._clock() < found[0]:
            return found[1]
        generation = self.generation
        try:
            found_now = await self._store.get(tenant_id)
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("tenant limits unreadable (%s); the last known stay in force", exc)
            return found[1] if found is not None else LimitOverrides()
        overrides = LimitOverrides() if found_now is None else found_now[0]
        if generation == self.generation:  # not read before a change was announced
            self._entries[tenant_id] = (self._clock() + self._ttl_s, overrides)
        return overrides

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1
