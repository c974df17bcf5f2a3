"""The work item and what becomes of it: the runtime's own vocabulary.

A ``Delivery`` is a job taken from a stream, with where it came from and which attempt this is;
the Redis adapter's entries are turned into deliveries (or ``Unreadable`` entries) as they come
in, so nothing past the dispatcher depends on how the queue reads them. A ``Done`` is a finished
attempt: every provider call it made (``Try``) and what they amount to (and, for a task that
keeps its results, the run's ``job_results`` row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pulse.core.models import Job
from pulse.core.ports import Delivered, Failed, Outcome, Retry
from pulse.core.timeutil import utcnow
from pulse.queue.codec import MESSAGE_FIELD
from pulse.queue.consumer import Entry
from pulse.queue.transitions import EntryRef
from pulse.store.ledger import RunRow

OUTCOME_NAMES = {Delivered: "delivered", Retry: "retry", Failed: "failed"}

CIRCUIT_OPEN = "CircuitOpen"  # the error class of an attempt refused by open breakers
NOT_SERVED = "TaskNotServed"  # a task this worker does not have: handed back, no attempt used
NOT_STARTED = "TaskNotStarted"  # a task whose start could not be recorded: not run, no attempt

RATE_LIMITED = "RateLimited"  # ... and of one put off by providers' rates (runtime/throttle.py)
RECIPIENT_CAPPED = "RecipientCapped"  # ... put off by its recipient's cap (runtime/caps.py)
CAP_SKIPPED = "RecipientCapSkipped"  # the error class of a notification skipped by a cap
NOT_MADE = frozenset(
    {CIRCUIT_OPEN, NOT_SERVED, NOT_STARTED, RATE_LIMITED, RECIPIENT_CAPPED, CAP_SKIPPED}
)


class Lane(Protocol):
    """What the dispatcher hands work to: a channel's deliverer or a task's lane."""

    @property
    def name(self) -> str: ...

    def put(self, delivery: Delivery) -> None: ...

    async def wait_for_room(self) -> None: ...

    async def run(self) -> None: ...

    async def drain(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job taken from ``stream`` as ``entry_id``; ``attempt`` counts the attempts made with
    this one (the stream's delivery count: 1 on the first read, +1 on every reclaim)."""

    stream: str
    entry_id: str
    attempt: int
    job: Job

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id, self.job.id)

    @property
    def lease_key(self) -> tuple[str, str]:
        return (self.stream, self.entry_id)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An entry that is not a job this worker understands: kept raw in the dead letters."""

    stream: str
    entry_id: str
    raw: bytes
    reason: str

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id)


def received(entries: Sequence[Entry]) -> tuple[list[Delivery], list[Unreadable]]:
    """The queue's entries as deliveries, and the ones that could not be decoded."""
    deliveries, unreadable = [], []
    for entry in entries:
        if entry.job is not None:
            deliveries.append(Delivery(entry.stream, entry.entry_id, entry.attempt, entry.job))
        else:
            raw = entry.error.raw.get(MESSAGE_FIELD, b"") if entry.error is not None else b""
            reason = f"undecodable: {entry.error}"
            unreadable.append(Unreadable(entry.stream, entry.entry_id, raw, reason))
    return deliveries, unreadable


@dataclass(frozen=True, slots=True)
class Try:
    """One provider call within an attempt (``provider`` None: no call could be made)."""

    provider: str | None
    outcome: Outcome
    started_at: datetime
    duration_s: float


@dataclass(frozen=True, slots=True)
class Done:
    """A finished attempt on its way to the acker: every provider call it made, in order."""

    delivery: Delivery
    tries: tuple[Try, ...]
    outcome: Outcome  # what the attempt amounts to (``final_outcome``)
    run: RunRow | None = None  # a task's run whose result is kept: recorded with the status

    @property
    def made(self) -> bool:
        """Was this attempt made? Only one that every open breaker (or provider rate) of its
        route refused, before any provider was called, was not: its retry does not count
        against ``max_attempts``.
        One decided without a call for its own reasons (a bad payload) was made and counts."""
        return not all(
            call.provider is None
            and not isinstance(call.outcome, Delivered)
            and call.outcome.error_class in NOT_MADE
            for call in self.tries
        )

    @property
    def skipped(self) -> bool:
        """Ended by its recipient's cap (``skip``): neither delivered nor failed."""
        outcome = self.outcome
        return isinstance(outcome, Failed) and outcome.error_class == CAP_SKIPPED

    @classmethod
    def of(cls, delivery: Delivery, tries: list[Try]) -> Done:
        return cls(delivery, tuple(tries), final_outcome(tries))

    @classmethod
    def without_call(cls, delivery: Delivery, outcome: Outcome) -> Done:
        """An attempt decided before any provider was called (bad payload, unknown channel)."""
        return cls(delivery, (Try(None, outcome, utcnow(), 0.0),), outcome)


def final_outcome(tries: list[Try]) -> Outcome:
    """What the attempt amounts to: the last call's outcome; when every provider failed
    temporarily, one Retry naming each, waiting as little as any of them asked."""
    last = tries[-1].outcome
    failures = [(t.provider, t.outcome) for t in tries if isinstance(t.outcome, Retry)]
    if not isinstance(last, Retry) or len(failures) < 2:
        return last
    waits = [retry.after_s for _, retry in failures]
    return Retry(
        error="; ".join(f"{provider}: {retry.error}" for provider, retry in failures),
        after_s=None if None in waits else min(w for w in waits if w is not None),
        error_class=last.error_class,
        response=last.response,
    )
