"""What actors pass to each other."""

from __future__ import annotations

from dataclasses import dataclass

from pulse.core.models import Job
from pulse.core.ports import Outcome
from pulse.core.timeutil import utcnow
from pulse.queue.consumer import Entry
from pulse.runtime.failover import Try, final_outcome


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed job on its way to a deliverer; ``attempt`` is the stream's delivery count."""

    entry: Entry
    job: Job

    @property
    def attempt(self) -> int:
        return self.entry.attempt

    @property
    def lease_key(self) -> tuple[str, str]:
        return (self.entry.stream, self.entry.entry_id)


@dataclass(frozen=True, slots=True)
class Done:
    """A finished attempt on its way to the acker: every provider call it made, in order."""

    item: WorkItem
    tries: tuple[Try, ...]
    outcome: Outcome  # what the attempt amounts to (``failover.final_outcome``)

    @property
    def made(self) -> bool:
        """Did this attempt call a provider? A retry of one that did not (every breaker of its
        route open) does not count against ``max_attempts``."""
        return any(call.provider is not None for call in self.tries)

    @classmethod
    def of(cls, item: WorkItem, tries: list[Try]) -> Done:
        return cls(item, tuple(tries), final_outcome(tries))

    @classmethod
    def without_call(cls, item: WorkItem, outcome: Outcome) -> Done:
        """An attempt decided before any provider was called (bad payload, unknown channel)."""
        return cls(item, (Try(None, outcome, utcnow(), 0.0),), outcome)
