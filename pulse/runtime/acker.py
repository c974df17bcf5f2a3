"""Persists finished attempts in batches, then acknowledges their stream entries.

The order is the promise: an entry is acknowledged (XACK + XDEL) only after PostgreSQL has
committed its new status. If PostgreSQL is down, results wait here and nothing is acknowledged;
if the process dies first, the entries are still pending in Redis and come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from pulse.metrics import Metrics
from pulse.models import Status
from pulse.ports import Delivered, Failed, Outcome, Retry
from pulse.queue.consumer import Consumer, Entry
from pulse.runtime.work import Done
from pulse.store.notifications import NotificationStore, OutcomeRow

logger = logging.getLogger("pulse.runtime.acker")
RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)


def status_of(outcome: Outcome) -> Status:
    if isinstance(outcome, Delivered):
        return Status.DELIVERED
    if isinstance(outcome, Failed):
        return Status.FAILED
    return Status.RETRYING


def error_of(outcome: Outcome) -> str | None:
    return None if isinstance(outcome, Delivered) else outcome.error


class Acker:
    def __init__(
        self,
        store: NotificationStore,
        consumer: Consumer,
        metrics: Metrics,
        *,
        batch_size: int,
        interval_s: float,
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._metrics = metrics
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._results: list[Done] = []
        self._ack_only: list[Entry] = []
        self._wakeup = asyncio.Event()
        self._failures = 0

    def submit(self, done: Done) -> None:
        self._results.append(done)
        if len(self._results) >= self._batch_size:
            self._wakeup.set()

    def ack_only(self, entries: Sequence[Entry]) -> None:
        """Acknowledge entries whose notification needs no state change (already finished)."""
        self._ack_only.extend(entries)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._results) + len(self._ack_only)

    async def run(self) -> None:
        """Flush every ``interval`` or as soon as a batch is full; runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval_s)
            self._wakeup.clear()
            await self.flush()

    async def drain(self, timeout_s: float) -> bool:
        """Flush until nothing is left (shutdown); False if the store stayed down too long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.backlog and loop.time() < deadline:
            await self.flush()
        return not self.backlog

    async def flush(self) -> None:
        results, self._results = self._results, []
        ack_only, self._ack_only = self._ack_only, []
        if not results and not ack_only:
            return
        try:
            await self._persist_and_ack(results, ack_only)
            self._failures = 0
        except asyncio.CancelledError:
            self._restore(results, ack_only)
            raise
        except Exception:
            self._restore(results, ack_only)
            delay = RETRY_DELAYS_S[min(self._failures, len(RETRY_DELAYS_S) - 1)]
            self._failures += 1
            logger.exception("could not persist %d results; retrying in %.2fs", len(results), delay)
            await asyncio.sleep(delay)

    def _restore(self, results: list[Done], ack_only: list[Entry]) -> None:
        """Put a batch back in front; recording twice is harmless: only ``delivering`` rows move."""
        self._results[:0] = results
        self._ack_only[:0] = ack_only

    async def _persist_and_ack(self, results: list[Done], ack_only: list[Entry]) -> None:
        rows = [
            OutcomeRow(d.item.job.id, status_of(d.outcome), error_of(d.outcome)) for d in results
        ]
        await self._store.record(rows, self._consumer.name)
        finished = [d.item.entry for d in results if not isinstance(d.outcome, Retry)]
        await self._consumer.ack([*finished, *ack_only])
        self._count(results)

    def _count(self, results: list[Done]) -> None:
        for done in results:
            channel = done.item.job.handler
            if isinstance(done.outcome, Delivered):
                self._metrics.delivered.labels(channel).inc()
            elif isinstance(done.outcome, Failed):
                self._metrics.failed.labels(channel).inc()
            else:
                self._metrics.retried.labels(channel).inc()
