"""Domain types: statuses, priorities, the accepted request and the job that carries it.

A notification is a job whose handler is a channel; the runtime only knows jobs, so a later
kind of job (a user task function) runs through the same fetcher, deliverers and acker.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

from pulse.core.tracecontext import Origin


class Status(enum.StrEnum):
    """Lifecycle of a notification. Who moves it where:

    - ``scheduled``: accepted with a future time (``send_at``); a worker's scheduler moves it to
      ``queued`` once it streamed it (or the claim does, if that record lags); the API moves it
      to ``cancelled``.
    - ``waiting``: a task enqueued ``after`` others; the end of its last parent moves it to
      ``queued`` (or ``cancelled``), in the same transaction (sql/014_task_flows.sql).
    - ``queued``: committed and appended to its priority stream by the API; or moved back here
      by the acker when a fallback step takes over (with fresh attempts).
    - ``delivering``: claimed by a worker's fetcher just before its channel is called.
    - ``retrying``: the channel failed temporarily; the entry stays pending for another attempt.
    - ``skipped``: the acker, when the recipient's cap (``skip``) held it back: nothing sent.
    - ``delivered`` / ``failed`` / ``cancelled`` / ``skipped``: terminal; nothing moves them out.
    """

    SCHEDULED = "scheduled"
    WAITING = "waiting"
    QUEUED = "queued"
    DELIVERING = "delivering"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


RECEIPT_CHANNEL = "receipt"  # the internal channel delivery receipts travel on

# Priority scale: lower is more urgent. One Redis stream per level.
PRIORITY_NAMES = ("critical", "high", "normal", "low", "bulk")
MIN_PRIORITY = 0
MAX_PRIORITY = len(PRIORITY_NAMES) - 1
DEFAULT_PRIORITY = 2

PriorityLevel = Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
# A database row id as the API shows it: PostgreSQL's bigint.
RowId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MaxAttempts = Annotated[int, msgspec.Meta(ge=1, le=100)]


class JobKind(enum.StrEnum):
    """What a job's handler is: a channel delivering one notification, or the fan-out that
    expands a committed batch into its notifications."""

    NOTIFICATION = "notification"
    FANOUT = "fanout"
    TASK = "task"  # a user function (pulse.tasks): ``channel`` is ``task:<name>``


TASK_PREFIX = "task:"  # the channel column of a task's row: ``task:<task name>``


def task_channel(name: str) -> str:
    return TASK_PREFIX + name


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """The unit of work: what the runtime fetches, hands to a handler and acknowledges.

    For a notification with a fallback chain, ``channel``, ``recipient`` and ``payload`` are
    those of the step in force (``step`` 0 is its own channel, k is ``fallback[k-1]``)."""

    id: str
    tenant_id: str
    kind: JobKind
    channel: str  # the channel of the step in force
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    step: int = 0
    fallback: tuple[dict[str, Any], ...] = ()
    origin: Origin | None = None  # the accepting request and its span, for logs and traces

    def next_step(self) -> Job | None:
        """The job of the next fallback step (fresh attempts), or None at the chain's end."""
        if self.step >= len(self.fallback):
            return None
        following = self.fallback[self.step]
        return msgspec.structs.replace(
            self,
            channel=following["channel"],
            recipient=following["recipient"],
            payload=following["payload"],
            step=self.step + 1,
        )
