"""Hands entries (new from the fetcher, or taken back by the reclaimer) to the deliverers.

One claim statement per batch moves the notifications to ``delivering``; an entry whose
notification is already delivered, failed or cancelled, or whose fallback chain has moved past
the entry's step, is acknowledged without sending (the delivery ledger); one a live worker is
delivering is left pending; an entry that cannot be decoded goes to the dead letters, raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pulse.core.models import Job, JobKind
from pulse.core.ports import Failed
from pulse.queue.consumer import Entry
from pulse.runtime.acker import Acker
from pulse.runtime.backoff import until_answered
from pulse.runtime.deliverer import Deliverer
from pulse.runtime.fanout import FanOut
from pulse.runtime.leaser import Leaser
from pulse.runtime.work import Done, WorkItem
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import Claim, DeliveryLedger


class Dispatcher:
    def __init__(
        self,
        store: DeliveryLedger,
        deliverers: Mapping[str, Deliverer],
        acker: Acker,
        leaser: Leaser,
        worker: str,
        lease_s: float,
        fan_out: FanOut,
    ) -> None:
        self._store = store
        self._deliverers = deliverers
        self._acker = acker
        self._leaser = leaser
        self._worker = worker
        self._lease_s = lease_s
        self._fan_out = fan_out

    async def wait_for_room(self) -> None:
        """Backpressure: return once every deliverer's mailbox has room for another round."""
        for deliverer in self._deliverers.values():
            await deliverer.wait_for_room()

    async def dispatch(self, entries: Sequence[Entry]) -> None:
        undecodable = [e for e in entries if e.job is None]
        if undecodable:
            self._acker.dead_letter_undecodable(undecodable)
        batches = [e for e in entries if e.job is not None and e.job.kind is JobKind.FANOUT]
        if batches:
            await self._fan_out.expand(batches)
            self._acker.ack_only(batches)
        good = [e for e in entries if e.job is not None and e.job.kind is not JobKind.FANOUT]
        if not good:
            return
        claim = await self._claim([e.job for e in good if e.job is not None])
        finished = [e for e in good if e.job_id in claim.finished]
        if finished:
            self._acker.ack_only(finished)
        for entry in good:
            if entry.job_id in claim.claimed:
                self._hand_out(entry)
        # The rest are in a live worker's hands: left pending, looked at again after a lease.

    def _hand_out(self, entry: Entry) -> None:
        assert entry.job is not None
        item = WorkItem(entry=entry, job=entry.job)
        self._leaser.hold(item.lease_key, item.job.id)
        deliverer = self._deliverers.get(entry.job.channel)
        if deliverer is None:
            error = f"channel {entry.job.channel!r} is not served by this worker"
            failed = Failed(error=error, error_class="UnknownChannel")
            self._acker.submit(Done.without_call(item, failed))
            return
        deliverer.put(item)

    async def _claim(self, jobs: list[Job]) -> Claim:
        """Claim until PostgreSQL answers: the entries are ours and pending meanwhile."""
        return await until_answered(
            lambda: self._store.claim(jobs, self._worker, self._lease_s),
            "claim in PostgreSQL",
            TRANSIENT_DB_ERRORS,
        )
