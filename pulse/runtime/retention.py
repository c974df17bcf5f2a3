"""The retention loop: keeps the weekly partitions ahead and removes finished work past
``PULSE_RETENTION_DAYS`` (pulse/store/retention.py says what may go and how).

One copy runs at a time across the workers of a deployment, under a Redis lock with an expiry
(as the reconciler), and each partition drop also takes a PostgreSQL advisory lock, so two
deployments sharing a database never drop at once. A pass is bounded (``max_batches`` deletes
of ``batch`` rows each); what is left waits for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from pulse.metrics import Metrics
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.lock import ExpiringLock
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.retention import PartitionStore

logger = logging.getLogger("pulse.runtime.retention")

# A lock or a deadlock lost to the application's own transactions: the week waits a pass.
_CONTENDED = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError)


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    days: int = 30
    interval_s: float = 3600.0
    batch: int = 1000
    max_batches: int = 100

    @property
    def lock_ttl_ms(self) -> int:
        return int(max(self.interval_s, 600.0) * 1000)


@dataclass(frozen=True, slots=True)
class RetentionPass:
    created: int = 0  # partitions created ahead
    dropped: tuple[str, ...] = ()  # notifications partitions dropped (with their rows)
    kept: tuple[str, ...] = ()  # ended weeks that still hold live work
    deleted: int = 0  # finished notifications deleted row by row from weeks that stay


class Retention:
    def __init__(
        self,
        store: PartitionStore,
        lock: ExpiringLock,
        settings: RetentionSettings,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._lock = lock
        self._settings = settings
        self._metrics = metrics
        self._clock = clock

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except (*TRANSIENT_REDIS_ERRORS, *TRANSIENT_DB_ERRORS) as exc:
                logger.warning("retention pass skipped: %s", exc)
            await asyncio.sleep(self._settings.interval_s)

    async def run_once(self, now: datetime | None = None) -> RetentionPass | None:
        """One pass if this worker gets the lock (None when another one has it)."""
        if not await self._lock.acquire():
            return None
        try:
            return await self._pass(now or self._clock())
        finally:
            await self._lock.release()

    async def _pass(self, now: datetime) -> RetentionPass:
        cutoff = now - timedelta(days=self._settings.days)
        created = 0
        try:
            created = await self._store.ensure_weeks(now)
        except _CONTENDED as exc:
            logger.warning("partitions ahead not created this pass: %s", exc)
        dropped, kept = [], []
        for week in await self._store.ended_weeks(cutoff):
            try:
                gone = await self._store.drop_if_done(week, cutoff)
            except _CONTENDED as exc:
                logger.warning("%s stays this pass: %s", week.name, exc)
                continue
            if gone is None:
                kept.append(week.name)
                continue
            dropped.append(gone.name)
            self._metrics.partitions_dropped.inc()
            self._metrics.rows_removed.labels("dropped").inc(gone.estimate)
            logger.info("dropped %s (about %d notifications)", gone.name, gone.estimate)
        deleted = await self._delete(cutoff)
        return RetentionPass(created, tuple(dropped), tuple(kept), deleted)

    async def _delete(self, cutoff: datetime) -> int:
        """Batches of finished rows that a kept week (or the default partition) still holds,
        undecodable dead letters and expanded batches past the cutoff."""
        batch, total = self._settings.batch, 0
        for _ in range(self._settings.max_batches):
            deleted = await self._store.delete_finished(cutoff, batch)
            total += deleted
            self._metrics.rows_removed.labels("deleted").inc(deleted)
            if deleted < batch:
                break
        for sweep in (self._store.delete_undecodable, self._store.delete_batches):
            for _ in range(self._settings.max_batches):
                if await sweep(cutoff, batch) < batch:
                    break
        return total
