"""Keeps the leases of in-flight entries alive, in Redis and in PostgreSQL.

From the moment an entry is handed to a deliverer until the acker has settled it (the acker
holds and lets go of the lease: it answers for the delivery all that time), this actor renews
its lease every third of the lease period: in Redis (``renew.lua``: XCLAIM JUSTID, which
does not count as a delivery) and in PostgreSQL (the claim's ``updated_at``). Only entries of a
crashed or hung worker go idle long enough for another worker to take them, and a copy the
reconciler made after Redis lost its data cannot be claimed while the holder lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.pending import PendingEntries
from pulse.runtime.backoff import delay_for
from pulse.runtime.work import Delivery
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import DeliveryLedger

logger = logging.getLogger("pulse.runtime.leaser")
RETRY_DELAYS_S = (0.1, 0.25, 0.5)  # after a failed renewal: short, so a claim outlives an outage


class Leaser:
    def __init__(self, pending: PendingEntries, store: DeliveryLedger, lease_ms: int) -> None:
        self._pending = pending
        self._store = store
        self._interval_s = lease_ms / 3000
        self._held: dict[tuple[str, str], str] = {}

    def hold(self, delivery: Delivery) -> None:
        self._held[delivery.lease_key] = delivery.job.id

    def release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._held.pop(delivery.lease_key, None)

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> None:
        failures = 0
        while True:
            # A failed renewal is tried again within 0.5 s, not an interval later: waiting would
            # let a live holder's claim lapse after an outage of little more than lease/3.
            delay = delay_for(failures - 1, RETRY_DELAYS_S) if failures else self._interval_s
            await asyncio.sleep(delay)
            failures = 0 if await self.renew_once() else failures + 1

    async def renew_once(self) -> bool:
        """Renew every lease in hand; False when PostgreSQL or Redis could not be reached."""
        if not self._held:
            return True
        held = dict(self._held)
        renewed = True
        try:
            await self._store.touch(list(held.values()))
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("could not renew %d claims: %s", len(held), exc)
            renewed = False
        try:
            lost = await self._pending.renew(list(held))
        except TRANSIENT_REDIS_ERRORS as exc:
            logger.warning("could not renew %d leases: %s", len(held), exc)
            return False
        for key in lost:
            if key in self._held:  # not one the acker settled (and deleted) meanwhile
                logger.warning("lease of %s %s was taken by another worker", *key)
        return renewed
