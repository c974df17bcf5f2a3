"""Settles finished attempts in batches: PostgreSQL first, then Redis in one round trip.

Batches form by themselves, with no timer: an idle acker settles a result the moment it comes;
a busy one, when its round ends, takes everything that came during that round (at most
``batch_size``; the rest at once in the next round). A result waits at most for the round in
progress, so few are left unrecorded when the process is killed (each such result's message
was sent and is sent again by whoever reclaims it), and a batch grows exactly as large as the
load makes it.

``settle.py`` decides what each attempt turns into. The batch's statuses, audit, attempt and
dead-letter rows are committed in one statement, with the receipts of the notifications it
finished; only then are the stream entries acknowledged, scheduled for retry, moved to the dead
letters or to their next step, and the receipts streamed: one pipeline of atomic scripts. If
PostgreSQL is down, results wait here and nothing is acknowledged; if the process dies first,
the entries are still pending in Redis and come back after their lease (and committed receipts
are streamed by the reconciler).

The acker answers for a delivery from the moment the dispatcher hands it out until it is
settled: it holds the delivery's lease meanwhile (renewed by the leaser) and lets it go once
the delivery's transition is made.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Sequence

from pulse.core.ids import uuid7_ms
from pulse.core.models import Job, Status
from pulse.core.retry import RetryPolicy
from pulse.core.timeutil import now_ms
from pulse.metrics import LabelledOnce, Metrics
from pulse.queue.publisher import CHUNK
from pulse.queue.transitions import Transitions
from pulse.runtime.backoff import delay_for
from pulse.runtime.leaser import Leaser
from pulse.runtime.settle import Redactor, Settlement, settle
from pulse.runtime.work import Delivery, Done, Unreadable
from pulse.store.ledger import DeliveryLedger, UndecodableRow

logger = logging.getLogger("pulse.runtime.acker")
SETTLE_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # shorter first steps: results are waiting
UNDECODABLE = "undecodable"  # the channel label of an entry that could not be read
ROOM_BATCHES = 4  # results waiting, in batches, beyond which the fetcher waits (backpressure)


class Acker:
    def __init__(
        self,
        ledger: DeliveryLedger,
        transitions: Transitions,
        leaser: Leaser,
        metrics: Metrics,
        *,
        worker: str,
        policy: RetryPolicy,
        batch_size: int,
        secrets: Sequence[str] = (),
        receipt_max_attempts: int = 10,
    ) -> None:
        self._ledger = ledger
        self._transitions = transitions
        self._leaser = leaser
        self._metrics = metrics
        self._end_to_end = LabelledOnce(metrics.end_to_end)
        self._worker = worker
        self._receipt_max_attempts = receipt_max_attempts
        self._counters = {
            Status.DELIVERED: metrics.delivered,
            Status.RETRYING: metrics.retried,
            Status.FAILED: metrics.failed,
        }
        self._unpublished: list[Job] = []
        self._policy = policy
        self._redact = Redactor(secrets)
        self._rng = random.Random()  # seeded from os.urandom: every process jitters its own way
        self._batch_size = batch_size
        self._results: list[Done] = []
        self._ack_only: list[Delivery] = []
        self._unreadable: list[Unreadable] = []
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._failures = 0

    @property
    def redact(self) -> Redactor:
        """The scrubber of configured secrets (task lanes use it on what a run shows)."""
        return self._redact

    def take(self, delivery: Delivery) -> None:
        """A delivery was handed out: it is ours (and its lease held) until settled."""
        self._leaser.hold(delivery)

    def submit(self, done: Done) -> None:
        self._results.append(done)
        self._wakeup.set()
        if len(self._results) >= ROOM_BATCHES * self._batch_size:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Backpressure: while PostgreSQL is slower than the deliveries, results wait here,
        each holding its lease; the fetcher reads no more until they are down to a few
        batches."""
        await self._room.wait()

    def ack_only(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge deliveries whose notification needs no state change (already finished)."""
        self._ack_only.extend(deliveries)
        self._wakeup.set()

    def cancelled(self, delivery: Delivery) -> None:
        """A running task was cancelled on request: its row is already ``cancelled``, so its
        entry is acknowledged and its lease let go, with nothing else recorded."""
        self._leaser.release([delivery])
        self.ack_only([delivery])

    def dead_letter_unreadable(self, entries: Sequence[Unreadable]) -> None:
        self._unreadable.extend(entries)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        waiting = len(self._results) + len(self._ack_only) + len(self._unreadable)
        return waiting + len(self._unpublished)  # receipts committed, not yet streamed

    async def run(self) -> None:
        """Settle whatever has come, as soon as it comes; runs until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            if len(self._results) < ROOM_BATCHES * self._batch_size:
                self._room.set()
            if self.backlog:  # more than one batch came, or streaming receipts is behind
                self._wakeup.set()

    async def drain(self, timeout_s: float) -> bool:
        """Flush until nothing is left (shutdown); False if that took longer than allowed, in
        which case the rest stays pending in Redis for another worker."""
        try:
            await asyncio.wait_for(self._flush_all(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _flush_all(self) -> None:
        while self.backlog:
            await self.flush()

    async def flush(self) -> None:
        """Settle up to ``batch_size`` results (and every ack-only and unreadable entry)."""
        results = self._results[: self._batch_size]
        del self._results[: self._batch_size]
        batch = (results, self._ack_only, self._unreadable)
        self._ack_only, self._unreadable = [], []
        if not any(batch) and not self._unpublished:
            return
        try:
            await self._settle(*batch)
            self._failures = 0
        except asyncio.CancelledError:
            self._restore(*batch)
            raise
        except Exception:
            self._restore(*batch)
            delay = delay_for(self._failures, SETTLE_DELAYS_S)
            self._failures += 1
            logger.exception("could not settle %d results; retrying in %.2fs", len(batch[0]), delay)
            await asyncio.sleep(delay)

    def _restore(
        self, results: list[Done], ack_only: list[Delivery], bad: list[Unreadable]
    ) -> None:
        """Put a batch back in front; settling twice is harmless: only ``delivering`` rows move,
        and every Redis transition tolerates a second run."""
        self._results[:0] = results
        self._ack_only[:0] = ack_only
        self._unreadable[:0] = bad

    async def _settle(
        self, results: list[Done], ack_only: list[Delivery], bad: list[Unreadable]
    ) -> None:
        now = now_ms()
        plan = settle(results, self._policy, self._rng, now, self._redact)
        receipts = await self._ledger.record(
            plan.outcomes, plan.attempts, self._worker, self._receipt_max_attempts
        )
        self._unpublished.extend(receipts)  # kept until streamed, whatever fails below
        await self._ledger.record_undecodable([_undecodable_row(e) for e in bad])
        plan.redis.acks.extend(delivery.ref for delivery in ack_only)
        plan.redis.dead.extend((entry.ref, entry.reason) for entry in bad)
        plan.redis.receipts = self._unpublished[:CHUNK]  # a backlog goes a chunk a flush
        applied = await self._transitions.apply(plan.redis, now)
        del self._unpublished[: applied.streamed]
        applied.raise_error()
        self._leaser.release([done.delivery for done in results])
        self._count(plan, results, bad)

    def _count(self, plan: Settlement, results: list[Done], bad: list[Unreadable]) -> None:
        """Counted once settled, by channel and priority (counted in batches: ``labels()``
        costs more than the count); the end-to-end latency of each delivered one."""
        tally = Counter(
            (row.status, row.dead, done.delivery.job.channel, str(done.delivery.job.priority))
            for done, row in zip(results, plan.outcomes, strict=True)
        )
        tally.update((Status.FAILED, True, UNDECODABLE, _priority(e.stream)) for e in bad)
        for (status, dead, *labels), count in tally.items():
            counter = self._counters.get(status)
            if counter is not None and labels[0] != UNDECODABLE:
                counter.labels(*labels).inc(count)
            if dead:
                self._metrics.dead_lettered.labels(*labels).inc(count)
        self._observe_end_to_end(plan, results)
        sources = {done.delivery.job.id: done.delivery.job.channel for done in results}
        for entry, following in plan.redis.fallbacks:
            self._metrics.fallbacks.labels(sources[entry.job_id], following.channel).inc()

    def _observe_end_to_end(self, plan: Settlement, results: list[Done]) -> None:
        now = now_ms()
        for done, row in zip(results, plan.outcomes, strict=True):
            job = done.delivery.job
            accepted_at = uuid7_ms(job.id) if row.status is Status.DELIVERED else None
            if accepted_at is not None:
                self._end_to_end(job.channel, str(job.priority)).observe(
                    max(0, now - accepted_at) / 1000
                )


def _priority(stream: str) -> str:
    """A stream's priority level, from its name (``{prefix}:stream:<level>``)."""
    return stream.rsplit(":", 1)[-1]


def _undecodable_row(entry: Unreadable) -> UndecodableRow:
    return UndecodableRow(entry.stream, entry.entry_id, entry.raw, entry.reason)
