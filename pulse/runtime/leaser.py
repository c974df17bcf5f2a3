"""Keeps the leases of in-flight entries alive.

From the moment an entry is handed to a deliverer until the acker has settled it in Redis, this
actor renews its lease every third of the lease period (``renew.lua``: XCLAIM JUSTID, which
does not count as a delivery). Only entries of a crashed or hung worker go idle long enough for
another worker's reclaimer to take them.
"""

from __future__ import annotations

import asyncio
import logging

from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.pending import PendingEntries

logger = logging.getLogger("pulse.runtime.leaser")


class Leaser:
    def __init__(self, pending: PendingEntries, lease_ms: int) -> None:
        self._pending = pending
        self._interval_s = lease_ms / 3000
        self._held: set[tuple[str, str]] = set()

    def hold(self, key: tuple[str, str]) -> None:
        self._held.add(key)

    def release(self, key: tuple[str, str]) -> None:
        self._held.discard(key)

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.renew_once()

    async def renew_once(self) -> None:
        if not self._held:
            return
        try:
            lost = await self._pending.renew(list(self._held))
        except TRANSIENT_REDIS_ERRORS as exc:
            logger.warning("could not renew %d leases: %s", len(self._held), exc)
            return
        for key in lost:
            logger.warning("lease of %s %s was taken by another worker", *key)
