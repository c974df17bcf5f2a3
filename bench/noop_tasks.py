"""The task bench's task: does nothing, returns nothing (``PULSE_TASKS=bench.noop_tasks``)."""

from __future__ import annotations

import pulse

tasks = pulse.Tasks()


@tasks.task(name="bench.noop", max_attempts=5)
async def noop() -> None:
    return None
