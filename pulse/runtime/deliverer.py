"""One deliverer per channel: a bounded priority mailbox drained by a fixed number of lanes.

The mailbox bound is the backpressure: when a channel is slow its mailbox fills and the fetcher
waits for room *before* it reads its next round (never in the middle of one, where an urgent
entry would queue behind the round's bulk), so the worker stops reading more than it can
deliver. The mailbox is ordered by priority (then arrival), so an urgent item overtakes a
backlog of bulk work. The lanes bound how many provider calls of this channel are in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import msgspec

from pulse.metrics import Metrics
from pulse.ports import Channel, Envelope, Failed, Outcome, Retry
from pulse.runtime.acker import Acker
from pulse.runtime.work import Done, WorkItem
from pulse.timeutil import utcnow

logger = logging.getLogger("pulse.runtime.deliverer")


class Deliverer:
    def __init__(
        self, channel: Channel, acker: Acker, metrics: Metrics, *, concurrency: int, mailbox: int
    ) -> None:
        self._channel = channel
        self._acker = acker
        self._metrics = metrics
        self._concurrency = concurrency
        self._mailbox: asyncio.PriorityQueue[tuple[int, int, WorkItem]] = asyncio.PriorityQueue()
        self._limit = mailbox
        self._room = asyncio.Event()
        self._room.set()
        self._arrivals = itertools.count()

    @property
    def name(self) -> str:
        return self._channel.spec.name

    def put(self, item: WorkItem) -> None:
        """Never waits: the fetcher waited for room before reading (a round may overshoot the
        bound by at most one fetch batch)."""
        self._mailbox.put_nowait((item.job.priority, next(self._arrivals), item))
        if self._mailbox.qsize() >= self._limit:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as lanes:
            for _ in range(self._concurrency):
                lanes.create_task(self._lane())

    async def drain(self) -> None:
        """Return once every item put so far has been delivered and handed to the acker."""
        await self._mailbox.join()

    async def _lane(self) -> None:
        while True:
            _, _, item = await self._mailbox.get()
            if self._mailbox.qsize() < self._limit:
                self._room.set()
            try:
                started_at, started = utcnow(), time.perf_counter()
                outcome = await self._attempt(item)
                self._acker.submit(Done(item, outcome, started_at, time.perf_counter() - started))
            finally:
                self._mailbox.task_done()

    async def _attempt(self, item: WorkItem) -> Outcome:
        job = item.job
        try:
            payload = msgspec.convert(job.payload, self._channel.spec.payload_type)
        except msgspec.ValidationError as exc:
            error = f"payload no longer valid for {self.name}: {exc}"
            return Failed(error=error, error_class="InvalidPayload")
        envelope = Envelope(job.id, job.tenant_id, job.recipient, payload, item.attempt)
        started = time.perf_counter()
        try:
            return await self._channel.send(envelope)
        except Exception as exc:  # a plugin bug must not kill the lane; treat it as temporary
            logger.exception("channel %s raised on %s", self.name, job.id)
            return Retry(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
        finally:
            self._metrics.delivery_seconds.labels(self.name).observe(time.perf_counter() - started)
