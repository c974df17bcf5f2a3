"""Takes back pending entries: those due for another attempt and those a crashed worker left.

Every worker runs one; ``reclaim.lua`` is atomic, so two reclaimers never take one entry twice.
An entry is due when the acker scheduled its retry time and that time has come; it is abandoned
when nobody renewed its lease for ``lease_ms`` (its worker died or hung).

Its pause (``worker_reclaim_interval_ms``) is off the path of new work: it delays a retry by at
most that much past its due time (retries wait seconds), and an abandoned entry by that much
past its lease (tens of seconds); a pass that found a full batch goes on at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pulse.core.timeutil import now_ms
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.pending import PendingEntries
from pulse.runtime.dispatcher import Dispatcher

logger = logging.getLogger("pulse.runtime.reclaimer")
# Streams asked per round trip: the tenants' sub-streams may be many; what one trip claims is
# dispatched before the next is asked, as one stream's batch was.
STREAMS_PER_TRIP = 64


class Reclaimer:
    def __init__(
        self,
        pending: PendingEntries,
        dispatcher: Dispatcher,
        streams: list[str],
        *,
        lease_ms: int,
        interval_s: float,
        batch_size: int,
        more: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        """``more``: streams that come and go (tenants' sub-streams), asked on every pass."""
        if lease_ms <= 0 or interval_s <= 0 or batch_size <= 0:
            raise ValueError("reclaimer settings must be positive")
        self._pending = pending
        self._dispatcher = dispatcher
        self._streams = streams
        self._lease_ms = lease_ms
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._more = more

    async def run(self) -> None:
        while True:
            taken = await self.reclaim_once()
            if taken < self._batch_size:
                await asyncio.sleep(self._interval_s)

    async def reclaim_once(self) -> int:
        """One pass over every stream (``STREAMS_PER_TRIP`` a round trip), most urgent first;
        return how many entries it took."""
        taken = 0
        streams = self._streams
        if self._more is not None:
            try:
                streams = streams + await self._more()
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("could not list the tenant streams: %s", exc)
        for start in range(0, len(streams), STREAMS_PER_TRIP):
            some = streams[start : start + STREAMS_PER_TRIP]
            try:
                found = await self._pending.reclaim_each(
                    some, now_ms(), self._lease_ms, self._batch_size
                )
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("could not reclaim: %s", exc)
                return taken
            for stream, entries in zip(some, found, strict=True):
                if entries:
                    logger.info("reclaimed %d entries of %s", len(entries), stream)
                    await self._dispatcher.dispatch(entries)
                    taken += len(entries)
        return taken
