"""Finds notifications PostgreSQL holds as unfinished but Redis has lost, and enqueues them.

Causes: a crash between the API's commit and its XADD, or a Redis that restarted empty.
Scheduled notifications Redis lost go back to the due-time index, not to a stream
(``reindex.py``). One
copy runs at a time across all workers, under a lock with an expiry, so a SIGKILLed holder
blocks the others for at most ``lock_ttl``. Notifications touched within ``older_than_s`` are
left alone: the API may still be between its commit and its XADD.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pulse.core.models import Job
from pulse.queue.codec import unstreamable
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.index import JobIndex
from pulse.queue.lock import ExpiringLock
from pulse.queue.publisher import Publisher
from pulse.runtime.reindex import DueReindexer
from pulse.store.batches import BatchStore
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import DeliveryLedger

logger = logging.getLogger("pulse.runtime.reconciler")
PAGE = 1000


@dataclass(frozen=True, slots=True)
class ReconcilerSettings:
    interval_s: float = 10.0
    older_than_s: float = 30.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.older_than_s <= 0:
            raise ValueError("reconciler interval and age must be positive")

    @property
    def lock_ttl_ms(self) -> int:
        return int(max(self.interval_s * 3, 30.0) * 1000)


class Reconciler:
    def __init__(
        self,
        store: DeliveryLedger,
        batches: BatchStore,
        index: JobIndex,
        publisher: Publisher,
        lock: ExpiringLock,
        settings: ReconcilerSettings,
        worker: str,
        reindexer: DueReindexer | None = None,
    ) -> None:
        self._store = store
        self._batch_store = batches
        self._index = index
        self._publisher = publisher
        self._lock = lock
        self._settings = settings
        self._worker = worker
        self._reindexer = reindexer

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval_s)
            try:
                await self.reconcile_once()
            except (*TRANSIENT_REDIS_ERRORS, *TRANSIENT_DB_ERRORS) as exc:
                logger.warning("reconciliation skipped: %s", exc)

    async def reconcile_once(self) -> int:
        """One pass, if this worker gets the lock; return how many jobs it enqueued again."""
        if not await self._lock.acquire():
            return 0
        try:
            return await self._pass()
        finally:
            await self._lock.release()

    async def _batches(self) -> int:
        """Batches committed but never expanded, whose fan-out job Redis lost."""
        jobs = await self._batch_store.unexpanded(self._settings.older_than_s, PAGE)
        missing = set(await self._index.missing([job.id for job in jobs]))
        lost = [job for job in jobs if job.id in missing]
        if lost:
            await self._publisher.publish(lost)
            logger.warning("re-enqueued %d batches missing from Redis", len(lost))
        return len(lost)

    async def _pass(self) -> int:
        requeued = await self._batches()
        if self._reindexer is not None:  # scheduled ones go back to the due-time index
            requeued += await self._reindexer.reindex(self._settings.older_than_s)
        after = None
        while True:
            page = await self._store.open_jobs(self._settings.older_than_s, after, PAGE)
            if not page:
                return requeued
            requeued += await self._recover([job for job, _ in page])
            if len(page) < PAGE:
                return requeued
            last_job, last_at = page[-1]
            after = (last_at, last_job.id)

    async def _recover(self, page: list[Job]) -> int:
        """Stream again the jobs of ``page`` Redis lost. One the stream cannot carry fails
        alone, with its reason: it must not keep the rest of the page from being recovered."""
        missing = set(await self._index.missing([job.id for job in page]))
        lost = [job for job in page if job.id in missing]
        reasons = {job.id: reason for job in lost if (reason := unstreamable(job)) is not None}
        failed = await self._store.fail_unstreamable(reasons, self._worker)
        for job_id in failed:
            logger.error("notification %s failed: %s", job_id, reasons[job_id])
        streamable = [job.id for job in lost if job.id not in reasons]
        async with self._store.requeueing(streamable, self._worker) as noted:
            jobs = [job for job in lost if job.id in noted]
            if jobs:
                await self._publisher.publish(jobs)
        if jobs:
            logger.warning("re-enqueued %d notifications missing from Redis", len(jobs))
        return len(jobs)
