"""What actors pass to each other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pulse.models import Job
from pulse.ports import Outcome
from pulse.queue.consumer import Entry


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
    """A finished attempt on its way to the acker."""

    item: WorkItem
    outcome: Outcome
    started_at: datetime
    duration_s: float
