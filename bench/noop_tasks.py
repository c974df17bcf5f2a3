"""The task bench's task: does nothing, returns nothing (``PULSE_TASKS=bench.noop_tasks``)."""

from __future__ import annotations

import pulse

tasks = pulse.Tasks()


@tasks.task(name="bench.noop", max_attempts=5)
async def noop() -> None:
    return None


@tasks.task(name="bench.noop_off", max_attempts=5, keep_result_s=0)
async def noop_off() -> None:
    """The same with results off: no ``job_results`` row, the job's own row only."""
    return None
