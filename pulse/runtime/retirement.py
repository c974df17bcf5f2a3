"""The retirement loop: removes the retiring Redis partitions once they hold nothing.

A worker configured with fewer partitions than Redis remembers serves the ones above its count
as retiring (``QueueKeys.retiring_keys``): its fetchers, reclaimer, acker and scheduler treat
them like the others, and no producer appends to them. Every worker runs this loop. Each pass
raises the remembered count to this worker's own and says this worker is alive with its count
(``LiveCounts``), moves the top partition's dead letters to partition 0 and, under a lock,
removes that partition when it is above this worker's count (and below the count it read at
start: not one of a raise in progress), when no process alive counts above it (asked again
under the lock, right before the drop) and when it is empty; then it lowers the count and goes
on with the next one down. So a worker with more partitions, or an API process appending to
them, keeps them while it runs (a rolling restart with two counts, or the API lowered last),
and the others remove them once it has stopped. Partitions go from the top, so the count
always says which may hold work. A fetcher of a removed partition ends by itself (its streams
are gone: ``Consumer.regroup``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pulse.metrics import Metrics
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys
from pulse.queue.live_counts import LiveCounts
from pulse.queue.lock import ExpiringLock
from pulse.queue.partitions import PartitionCount

logger = logging.getLogger("pulse.runtime.retirement")


@dataclass(frozen=True, slots=True)
class RetirementSettings:
    interval_s: float = 5.0  # how often a worker looks whether a retiring partition is empty
    lock_ttl_ms: int = 30_000  # a pass is a few round trips; a dead holder blocks this long

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("retirement interval must be positive")


class Retirement:
    def __init__(
        self,
        count: PartitionCount,
        live: LiveCounts,
        keys: QueueKeys,
        lock: ExpiringLock,
        settings: RetirementSettings,
        metrics: Metrics,
        removed: Callable[[int], None],
    ) -> None:
        """``keys``: this worker's, serving its retiring partitions; ``removed(partition)``
        is told of each partition this worker read that is gone (its fetchers stop)."""
        self._count = count
        self._live = live
        self._keys = keys
        self._lock = lock
        self._settings = settings
        self._metrics = metrics
        self._removed = removed
        self._serving = {part.partition for part in keys.retiring_keys()}

    @property
    def retiring(self) -> list[int]:
        """The partitions this worker still reads above its count, lowest first."""
        return sorted(self._serving)

    def reading(self) -> list[int]:
        """Every partition this worker reads now: its own and those still retiring."""
        return [*range(self._keys.partitions), *self.retiring]

    async def run(self) -> None:
        self._announce()
        while True:
            try:
                await self.run_once()
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("retiring partitions not looked at this pass: %s", exc)
            await asyncio.sleep(self._settings.interval_s)

    async def leave(self) -> None:
        """This worker stopped: its count no longer keeps partitions alive."""
        await self._live.leave()

    def _announce(self) -> None:
        self._metrics.partitions_retiring.set(len(self._serving))
        for partition in self.retiring:
            logger.info(
                "partition %d retiring: read until empty, then removed (PULSE_REDIS_PARTITIONS"
                "=%d)",
                partition, self._keys.partitions,
            )  # fmt: skip

    async def run_once(self) -> None:
        """One pass: this worker's count raised again and said alive, then the partitions
        above every live process's count removed from the top while they are empty."""
        alive = await self._live.refresh()  # alive first, as at start (``served_keys``)
        remembered = await self._count.remember()
        for partition in self.retiring:
            if partition >= max(remembered, alive):  # removed by another worker
                self._gone(partition, by_us=False)
        top = min(remembered, self._keys.span) - 1  # not those of a raise after our start
        while top >= max(self._keys.partitions, alive) and await self._remove(top):
            top -= 1

    async def _remove(self, partition: int) -> bool:
        """Move the top partition's dead letters, then drop it if empty and no process alive
        counts above it, under the lock."""
        part = self._keys.part(partition)
        moved = await self._count.move_dead_letters(part)
        if moved:
            logger.info("partition %d: %d dead letters moved to partition 0", partition, moved)
        if not await self._lock.acquire():
            return False
        try:
            if await self._live.refresh() > partition or not await self._count.drop(part):
                return False
            await self._count.lower(partition)
        finally:
            await self._lock.release()
        self._gone(partition, by_us=True)
        return True

    def _gone(self, partition: int, *, by_us: bool) -> None:
        if by_us:
            self._metrics.partitions_removed.inc()
            logger.info("partition %d removed: it held nothing; its keys are deleted", partition)
        if partition not in self._serving:
            return
        self._serving.discard(partition)
        self._metrics.partitions_retiring.set(len(self._serving))
        if not by_us:
            logger.info(
                "partition %d no longer counted in Redis and no running process counts it"
                " (removed by another worker): not read any more",
                partition,
            )
        self._removed(partition)
