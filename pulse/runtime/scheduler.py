"""Streams scheduled notifications when they fall due (``lua/promote.lua``), then records them.

Every worker runs one; no lock is needed: the script removes what it streams atomically, so
two schedulers never stream one job twice. It sleeps until the earliest due time, at most
``max_sleep_s`` (a due time set by the API meanwhile waits no longer than that).

The record in PostgreSQL ('scheduled' -> 'queued' with its audit row) follows the stream, in
the background (at most ``max_records`` at once), so a slow PostgreSQL never delays the next
promotion: should it fail or the worker die in between, the worker's claim accepts a due
'scheduled' row, and the row is moved then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pulse.core.timeutil import now_ms
from pulse.metrics import Metrics
from pulse.queue.due import DueIndex
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.scheduled import ScheduledStore

logger = logging.getLogger("pulse.runtime.scheduler")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_sleep_s: float = 0.2
    batch: int = 1000
    retry_s: float = 1.0  # after Redis failed
    max_records: int = 4  # records in PostgreSQL running at once

    def __post_init__(self) -> None:
        if self.max_sleep_s <= 0 or self.batch < 1 or self.retry_s <= 0 or self.max_records < 1:
            raise ValueError("scheduler sleep, batch and retry must be positive")


class Scheduler:
    def __init__(
        self,
        index: DueIndex,
        store: ScheduledStore,
        settings: SchedulerSettings,
        worker: str,
        metrics: Metrics,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._index = index
        self._store = store
        self._settings = settings
        self._worker = worker
        self._lateness = metrics.schedule_lateness
        self._clock = clock
        self._records: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    wait = await self.tick()
                except TRANSIENT_REDIS_ERRORS as exc:
                    logger.warning("scheduler: Redis unreachable: %s", exc)
                    wait = self._settings.retry_s
                await asyncio.sleep(wait)
        finally:
            for task in self._records:  # the claim records what these would have
                task.cancel()

    async def tick(self) -> float:
        """Stream what is due; return how long to sleep before the next look (s)."""
        now = self._clock()
        promoted = await self._index.promote(now, self._settings.batch)
        for _, due in promoted.moved:
            self._lateness.observe(max(now - due, 0) / 1000)
        if promoted.moved:
            await self._start_record([job_id for job_id, _ in promoted.moved])
            if len(promoted.moved) >= self._settings.batch:
                return 0.0  # more may be due already
        if promoted.next_due_ms is None:
            return self._settings.max_sleep_s
        until_due = max(promoted.next_due_ms - self._clock(), 0) / 1000
        return min(until_due, self._settings.max_sleep_s)

    async def _start_record(self, ids: list[str]) -> None:
        while len(self._records) >= self._settings.max_records:
            await asyncio.wait(set(self._records), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._record(ids))
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    async def _record(self, ids: list[str]) -> None:
        try:
            await self._store.record_due(ids, self._worker)
        except TRANSIENT_DB_ERRORS as exc:  # the claim moves them instead
            logger.warning("scheduler: could not record %d due notifications: %s", len(ids), exc)
        except Exception:  # a background task: say so here, the claim still moves them
            logger.exception("scheduler: recording %d due notifications failed", len(ids))
        else:
            logger.debug("scheduler: streamed %d due notifications", len(ids))
