"""Cron schedules a task module declares (arq's ``cron_jobs``): registered by the worker at
start as job schedules of the deployment's schedule tenant (``PULSE_ARQ_TENANT``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CronEntry:
    """Enqueue ``task`` (no arguments) at each occurrence of ``cron`` (5 fields, UTC).
    ``name`` keys the schedule: registering the same name again updates it.
    ``run_at_startup``: also enqueue it once when a worker starts."""

    name: str
    task: str
    cron: str
    run_at_startup: bool = False
