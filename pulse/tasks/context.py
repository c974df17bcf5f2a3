"""What a running task sees of its job: ids, attempt, progress, cancellation, resources."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

ProgressSink = Callable[[str, float, str | None], Awaitable[None]]


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every line names the job it runs for."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[job {extra.get('job_id')}] {msg}", kwargs


@dataclass(slots=True)
class Context:
    """The first argument of a task that asks for it (a parameter named ``ctx`` or annotated
    ``Context``). ``resources`` holds what the ``on_startup`` hooks built, once per process.

    Tasks run at least once: a worker killed mid-task has the task run again after its lease,
    so a task with outside effects should be idempotent (``idempotency_key`` helps)."""

    job_id: str
    task: str
    attempt: int
    max_attempts: int
    tenant_id: str
    idempotency_key: str | None
    resources: dict[str, Any]
    _progress: ProgressSink = field(repr=False)
    # A group callback's: why ``results`` holds the members' job ids instead of their results
    # (over PULSE_MAX_GROUP_RESULTS_BYTES); None when it holds the results.
    results_omitted: str | None = None
    log: logging.LoggerAdapter[logging.Logger] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        base = logging.getLogger(f"pulse.tasks.{self.task}")
        self.log = JobLogger(base, {"job_id": self.job_id})

    async def progress(self, fraction: float, note: str | None = None) -> None:
        """Record how far the task is (0..1) and a note (shown by ``GET /api/jobs/{id}``)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress is a fraction between 0 and 1")
        await self._progress(self.job_id, fraction, note)

    def __getitem__(self, name: str) -> Any:
        """``ctx["db"]``: a resource, as arq's ctx dict reads."""
        return self.resources[name]
