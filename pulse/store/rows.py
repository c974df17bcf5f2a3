"""Rows of ``notifications`` as the domain types: shared by every store that reads them."""

from __future__ import annotations

from typing import Any

import msgspec

from pulse.core.models import TASK_PREFIX, Job, JobKind
from pulse.core.views import NotificationView

# What ``job_from_row`` needs, for a SELECT or RETURNING list (prefix ``n.`` where joined).
JOB_COLUMNS = (
    "id::text AS id, tenant_id::text AS tenant_id, channel, recipient, payload::text AS payload,"
    " priority, max_attempts, step, fallback::text AS fallback"
)
VIEW_COLUMNS = (
    "id::text AS id, status, channel, recipient, payload::text AS payload, priority,"
    " max_attempts, attempts, last_error, metadata::text AS metadata, fallback::text AS fallback,"
    " step, provider, receipt_for::text AS receipt_for, created_at, updated_at, delivered_at,"
    " failed_at, send_at"
)


def job_from_row(row: Any) -> Job:
    """The job of the step in force, from a row with ``JOB_COLUMNS``."""
    fallback = tuple(msgspec.json.decode(row["fallback"]))
    job = Job(
        id=row["id"],
        tenant_id=row["tenant_id"],
        kind=JobKind.TASK if row["channel"].startswith(TASK_PREFIX) else JobKind.NOTIFICATION,
        channel=row["channel"],
        recipient=row["recipient"],
        payload=msgspec.json.decode(row["payload"]),
        priority=row["priority"],
        max_attempts=row["max_attempts"],
        fallback=fallback,
    )
    step: int = row["step"]
    if 0 < step <= len(fallback):
        current = fallback[step - 1]
        job = msgspec.structs.replace(
            job,
            channel=current["channel"],
            recipient=current["recipient"],
            payload=current["payload"],
            step=step,
        )
    return job


def view_from_row(row: Any) -> NotificationView:
    fields = dict(row)
    for name in ("payload", "metadata", "fallback"):
        fields[name] = msgspec.json.decode(fields[name])
    return NotificationView(**fields)
