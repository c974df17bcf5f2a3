"""Reads batches from the priority streams, claims them in PostgreSQL, hands them out.

One claim statement per batch moves the notifications to ``delivering`` (with their audit
rows); entries whose notification is already finished are acknowledged without sending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pulse.ports import Failed
from pulse.queue.consumer import Consumer, Entry
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.runtime.acker import Acker
from pulse.runtime.deliverer import Deliverer
from pulse.runtime.work import Done, WorkItem
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.notifications import NotificationStore

logger = logging.getLogger("pulse.runtime.fetcher")
BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Fetcher:
    def __init__(
        self,
        consumer: Consumer,
        store: NotificationStore,
        deliverers: Mapping[str, Deliverer],
        acker: Acker,
        *,
        batch_size: int,
        block_ms: int,
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._deliverers = deliverers
        self._acker = acker
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the read in progress, dispatch it, then return from ``run``."""
        self._stopping.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                entries = await self._consumer.read(self._batch_size, self._block_ms)
                failures = 0
            except TRANSIENT_REDIS_ERRORS as exc:
                failures = await self._pause("read from Redis", exc, failures)
                continue
            if entries:
                await self._dispatch(entries)

    async def _dispatch(self, entries: list[Entry]) -> None:
        for bad in (e for e in entries if e.job is None):
            logger.error(
                "undecodable entry %s in %s left pending: %s", bad.entry_id, bad.stream, bad.error
            )
        good = [e for e in entries if e.job is not None]
        claimed = await self._claim([e.job.id for e in good if e.job is not None])
        finished: list[Entry] = []
        for entry in good:
            assert entry.job is not None
            attempt = claimed.get(entry.job.id)
            if attempt is None:
                finished.append(entry)
                continue
            item = WorkItem(entry=entry, job=entry.job, attempt=attempt)
            deliverer = self._deliverers.get(entry.job.handler)
            if deliverer is None:
                error = f"channel {entry.job.handler!r} is not served by this worker"
                self._acker.submit(Done(item, Failed(error=error)))
            else:
                await deliverer.put(item)
        if finished:
            self._acker.ack_only(finished)

    async def _claim(self, ids: list[str]) -> dict[str, int]:
        """Claim until PostgreSQL answers: the entries are ours and pending meanwhile."""
        failures = 0
        while True:
            try:
                return await self._store.claim(ids, self._consumer.name)
            except TRANSIENT_DB_ERRORS as exc:
                failures = await self._pause("claim in PostgreSQL", exc, failures)

    @staticmethod
    async def _pause(what: str, exc: BaseException, failures: int) -> int:
        delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
        logger.warning("could not %s (%s); retrying in %.2fs", what, exc, delay)
        await asyncio.sleep(delay)
        return failures + 1
