"""What actors pass to each other."""

from __future__ import annotations

from dataclasses import dataclass

from pulse.models import Job
from pulse.ports import Outcome
from pulse.queue.consumer import Entry


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed job on its way to a deliverer; ``attempt`` counts from 1."""

    entry: Entry
    job: Job
    attempt: int


@dataclass(frozen=True, slots=True)
class Done:
    """A finished attempt on its way to the acker."""

    item: WorkItem
    outcome: Outcome
