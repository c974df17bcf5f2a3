"""The documents of ``/api/jobs``: a task's job as the API shows it and the client reads it.

A task's row shares the notifications' lifecycle; its statuses are named for what a task does
(``delivering`` is ``running``, ``delivered`` is ``succeeded``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from pulse.core.errors import InvalidInput
from pulse.core.models import MaxAttempts, PriorityLevel, Status
from pulse.core.schedule import Delay, RequestedTime, due_time

JOB_STATUS = {
    Status.SCHEDULED: "scheduled",
    Status.WAITING: "waiting",
    Status.QUEUED: "queued",
    Status.DELIVERING: "running",
    Status.RETRYING: "retrying",
    Status.DELIVERED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
}
ROW_STATUS = {name: status for status, name in JOB_STATUS.items()}
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
MAX_PARENTS = 1000  # parents of one job, members of one group
TaskName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.:<>-]{0,199}$")]


class JobAccepted(msgspec.Struct, kw_only=True):
    id: str
    task: str
    status: str
    priority: int
    created_at: str
    send_at: str | None = None  # deferred: when it is due (status 'scheduled')


class JobRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/jobs/``: run task ``task`` with keyword arguments ``args``."""

    task: TaskName
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: PriorityLevel | None = None  # None: the task's default
    max_attempts: MaxAttempts | None = None
    after: Annotated[list[str], msgspec.Meta(max_length=MAX_PARENTS)] | None = None  # job ids
    send_at: RequestedTime | None = None  # deferred to this time (RFC 3339 with an offset)
    delay_s: Delay | None = None  # deferred by this many seconds

    def due(self, now: datetime, max_ahead_s: float) -> datetime | None:
        """When the job is due (None: at once); 422 naming the field out of bounds."""
        if self.after is not None and (self.send_at is not None or self.delay_s is not None):
            field = "send_at" if self.send_at is not None else "delay_s"
            detail = f"{field}: a job that waits on 'after' cannot be deferred"
            raise InvalidInput(detail, f"$.{field}")
        return due_time(now, self.send_at, self.delay_s, None, max_ahead_s)


class JobBatchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/jobs/batch``: many jobs, each checked and answered on its own."""

    items: list[Any]


class JobGroupRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/jobs/group``: jobs that run side by side and, once all succeeded, ``then``
    (its task receives their results, in order, as its ``results`` argument; their job ids
    instead when the results total more than PULSE_MAX_GROUP_RESULTS_BYTES, sql/017)."""

    jobs: Annotated[list[JobRequest], msgspec.Meta(min_length=1, max_length=MAX_PARENTS)]
    then: JobRequest | None = None


class JobItemAccepted(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One item of a batch: the job accepted, or the errors (JSON Pointers into the items)."""

    index: int
    job: JobAccepted | None = None
    errors: list[dict[str, str]] | None = None


class JobBatchAccepted(msgspec.Struct, kw_only=True):
    accepted: int
    rejected: int
    items: list[JobItemAccepted]


class JobGroupAccepted(msgspec.Struct, kw_only=True):
    jobs: list[JobAccepted]
    then: JobAccepted | None = None


class JobError(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str | None = None
    message: str | None = None
    traceback: str | None = None


class JobDocument(msgspec.Struct, kw_only=True):
    id: str
    task: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    args: dict[str, Any]
    progress: float | None = None
    note: str | None = None
    result: Any = None
    error: JobError | None = None
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None  # why it was cancelled (by whom, or which parent)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobList(msgspec.Struct, kw_only=True):
    items: list[JobDocument]
    next_cursor: str | None = None
