"""Every Redis key name Pulse uses, built here and nowhere else.

All keys share one hash tag, ``{prefix}``, so every Lua script touches a single Redis Cluster
slot. A different prefix gives a fully separate Pulse (tests use a random one per run).
"""

from __future__ import annotations

from dataclasses import dataclass

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY

CONSUMER_GROUP = "pulse-workers"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    prefix: str = "pulse"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    def stream(self, priority: int) -> str:
        """The stream of one priority level; lower levels are more urgent."""
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority {priority} outside {MIN_PRIORITY}..{MAX_PRIORITY}")
        return f"{self.tag}:stream:{priority}"

    def streams(self) -> list[str]:
        """All priority streams, most urgent first."""
        return [self.stream(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def retry_schedule(self, stream: str) -> str:
        """Entry ids of ``stream`` waiting for another attempt, scored by due time (ms)."""
        return f"{stream}:retry"

    def scheduled(self, priority: int) -> str:
        """Job ids of one priority waiting for their due time, scored by it (ms): an index of
        PostgreSQL's 'scheduled' rows, rebuilt by the reconciler when lost."""
        return f"{self.stream(priority)}:scheduled"

    def all_scheduled(self) -> list[str]:
        return [self.scheduled(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def scheduled_jobs(self) -> str:
        """Job id -> its encoded stream message, for every job in a scheduled set."""
        return f"{self.tag}:scheduled:jobs"

    def dead_letters(self) -> str:
        return f"{self.tag}:dead"

    def index(self) -> str:
        """Job id -> "<stream> <entry id>" for every job in a stream (the reconciler's view)."""
        return f"{self.tag}:index"

    def workers(self) -> str:
        """Worker name -> its last heartbeat (JSON): who is alive and what it is doing."""
        return f"{self.tag}:workers"

    def workers_seen(self) -> str:
        """Worker name scored by its last heartbeat (ms): how stale heartbeats are pruned."""
        return f"{self.tag}:workers:seen"

    def lock(self, name: str) -> str:
        return f"{self.tag}:lock:{name}"

    def all_keys(self) -> list[str]:
        streams = self.streams()
        schedules = [self.retry_schedule(s) for s in streams]
        extra = [self.dead_letters(), self.index(), self.workers(), self.workers_seen()]
        return [*streams, *schedules, *self.all_scheduled(), self.scheduled_jobs(), *extra]
