"""One deliverer per channel: a bounded priority mailbox drained by a fixed number of lanes.

The mailbox bound is the backpressure: when a channel is slow its mailbox fills and the fetcher
waits for room *before* it reads its next round (never in the middle of one, where an urgent
entry would queue behind the round's bulk), so the worker stops reading more than it can
deliver. The mailbox is ordered by priority (then arrival), so an urgent delivery overtakes a
backlog of bulk work. The lanes bound how many deliveries of this channel are in flight; each
goes down its route of providers (``failover.py``).

Each attempt runs in its delivery's context: a span (``pulse.deliver``) of the trace it was
accepted in, and log fields (notification id, tenant, channel, attempt, the accepting request's
id) that every line written during the attempt carries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from pulse import logs, tracing
from pulse.core.ids import uuid7_ms
from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed
from pulse.core.timeutil import now_ms
from pulse.core.tracecontext import Origin
from pulse.metrics import LabelledOnce, Metrics
from pulse.runtime.acker import Acker
from pulse.runtime.failover import Failover
from pulse.runtime.work import OUTCOME_NAMES, Delivery, Done

logger = logging.getLogger("pulse.runtime.deliverer")


class Deliverer:
    def __init__(
        self,
        spec: ChannelSpec,
        failover: Failover,
        acker: Acker,
        metrics: Metrics,
        *,
        concurrency: int,
        mailbox: int,
    ) -> None:
        self._spec = spec
        self._failover = failover
        self._acker = acker
        self._seconds = metrics.delivery_seconds.labels(spec.name)
        self._waited = LabelledOnce(metrics.waited)
        self._concurrency = concurrency
        self._mailbox: asyncio.PriorityQueue[tuple[int, int, Delivery]] = asyncio.PriorityQueue()
        self._limit = mailbox
        self._room = asyncio.Event()
        self._room.set()
        self._arrivals = itertools.count()

    @property
    def name(self) -> str:
        return self._spec.name

    def put(self, delivery: Delivery) -> None:
        """Never waits: the fetcher waited for room before reading (a round may overshoot the
        bound by at most one fetch batch)."""
        self._mailbox.put_nowait((delivery.job.priority, next(self._arrivals), delivery))
        if self._mailbox.qsize() >= self._limit:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as lanes:
            for _ in range(self._concurrency):
                lanes.create_task(self._lane())

    async def drain(self) -> None:
        """Return once every delivery put so far has been delivered and handed to the acker."""
        await self._mailbox.join()

    async def _lane(self) -> None:
        while True:
            _, _, delivery = await self._mailbox.get()
            if self._mailbox.qsize() < self._limit:
                self._room.set()
            try:
                self._acker.submit(await self._attempt(delivery))
            finally:
                self._mailbox.task_done()

    async def _attempt(self, delivery: Delivery) -> Done:
        job = delivery.job
        origin = job.origin or Origin()
        attributes: dict[str, tracing.Value] = {
            "pulse.notification.id": job.id,
            "pulse.tenant.id": job.tenant_id,
            "pulse.channel": job.channel,
            "pulse.attempt": delivery.attempt,
        }
        with (
            delivery_context(delivery),
            tracing.span(
                "pulse.deliver", origin.trace, kind="consumer", attributes=attributes
            ) as span,
        ):
            done = await self._attempt_in_span(delivery)
            span.set("pulse.outcome", OUTCOME_NAMES[type(done.outcome)])
            if not isinstance(done.outcome, Delivered):
                span.failed(done.outcome.error_class)
            return done

    async def _attempt_in_span(self, delivery: Delivery) -> Done:
        job = delivery.job
        try:
            payload = msgspec.convert(job.payload, self._spec.payload_type)
        except msgspec.ValidationError as exc:
            error = f"payload no longer valid for {self.name}: {exc}"
            logger.warning("%s attempt %d: %s", job.id, delivery.attempt, error)
            return Done.without_call(delivery, Failed(error=error, error_class="InvalidPayload"))
        envelope = Envelope(job.id, job.tenant_id, job.recipient, payload, delivery.attempt)
        self._observe_wait(delivery)
        started = time.perf_counter()
        try:
            return Done.of(delivery, await self._failover.send(envelope))
        finally:
            self._seconds.observe(time.perf_counter() - started)

    def _observe_wait(self, delivery: Delivery) -> None:
        """From accepted (the time in its UUIDv7 id) to its first attempt's start."""
        job = delivery.job
        accepted_at = uuid7_ms(job.id) if delivery.attempt == 1 and job.step == 0 else None
        if accepted_at is not None:
            waited = max(0, now_ms() - accepted_at) / 1000
            self._waited(self.name, str(job.priority)).observe(waited)


@contextmanager
def delivery_context(delivery: Delivery) -> Iterator[None]:
    """The fields of every log line of this attempt (``provider`` is set by each call), and
    the id of the request that accepted it in place of a request's own."""
    job = delivery.job
    accepted_by = job.origin.request_id if job.origin is not None else None
    token = logs.request_id.set(accepted_by or "-")
    try:
        with logs.bound(
            notification_id=job.id,
            tenant_id=job.tenant_id,
            channel=job.channel,
            attempt=delivery.attempt,
            provider=None,
            request_id=accepted_by,
        ):
            yield
    finally:
        logs.request_id.reset(token)
