"""Hands entries (new from the fetcher, or taken back by the reclaimer) to the deliverers.

One claim statement per batch moves the notifications to ``delivering``; an entry whose
notification is already delivered, failed or cancelled, or whose fallback chain has moved past
the entry's step, is acknowledged without sending (the delivery ledger); one a live worker is
delivering is left pending; an entry that cannot be decoded goes to the dead letters, raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pulse.core.models import Job, JobKind
from pulse.core.ports import Failed, Retry
from pulse.queue.consumer import Entry
from pulse.runtime.acker import Acker
from pulse.runtime.backoff import until_answered
from pulse.runtime.fanout import FanOut
from pulse.runtime.work import NOT_SERVED, Delivery, Done, Lane, received
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import Claim, DeliveryLedger


class Dispatcher:
    def __init__(
        self,
        store: DeliveryLedger,
        deliverers: Mapping[str, Lane],
        acker: Acker,
        worker: str,
        lease_s: float,
        fan_out: FanOut,
    ) -> None:
        self._store = store
        self._deliverers = deliverers
        self._acker = acker
        self._worker = worker
        self._lease_s = lease_s
        self._fan_out = fan_out

    async def wait_for_room(self) -> None:
        """Backpressure: return once every deliverer's mailbox has room for another round,
        and the acker is keeping up."""
        for deliverer in self._deliverers.values():
            await deliverer.wait_for_room()
        await self._acker.wait_for_room()

    async def dispatch(self, entries: Sequence[Entry]) -> None:
        deliveries, unreadable = received(entries)
        if unreadable:
            self._acker.dead_letter_unreadable(unreadable)
        batches = [d for d in deliveries if d.job.kind is JobKind.FANOUT]
        if batches:
            await self._fan_out.expand(batches)
            self._acker.ack_only(batches)
        good = [d for d in deliveries if d.job.kind is not JobKind.FANOUT]
        if not good:
            return
        claim = await self._claim([d.job for d in good])
        finished = [d for d in good if d.job.id in claim.finished]
        if finished:
            self._acker.ack_only(finished)
        for delivery in good:
            if delivery.job.id in claim.claimed:
                self._hand_out(delivery)
        # The rest are in a live worker's hands: left pending, looked at again after a lease.

    def _hand_out(self, delivery: Delivery) -> None:
        self._acker.take(delivery)
        deliverer = self._deliverers.get(delivery.job.channel)
        if deliverer is None and delivery.job.kind is JobKind.TASK:
            self._acker.submit(Done.without_call(delivery, _hand_back(delivery)))
            return
        if deliverer is None:
            error = f"channel {delivery.job.channel!r} is not served by this worker"
            failed = Failed(error=error, error_class="UnknownChannel")
            self._acker.submit(Done.without_call(delivery, failed))
            return
        deliverer.put(delivery)

    async def _claim(self, jobs: list[Job]) -> Claim:
        """Claim until PostgreSQL answers: the entries are ours and pending meanwhile."""
        return await until_answered(
            lambda: self._store.claim(jobs, self._worker, self._lease_s),
            "claim in PostgreSQL",
            TRANSIENT_DB_ERRORS,
        )


HAND_BACK_S = 1.0  # a task this worker lacks waits this long before any worker reads it again


def _hand_back(delivery: Delivery) -> Retry:
    """A task this worker does not have: given back without using an attempt (NOT_SERVED),
    for a worker that has it (task streams are read only by workers started with --tasks)."""
    error = f"{delivery.job.channel!r} is not served by this worker"
    return Retry(error=error, after_s=HAND_BACK_S, error_class=NOT_SERVED)
