"""The task module of the task chaos test (``PULSE_TASKS=tests.chaos_tasks_example``): each
run that completes appends ``<job id>`` to the file named by ``CHAOS_TASK_MARKS``, so the test
counts how often each job's body ran to its end."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pulse

tasks = pulse.Tasks()
FAIL_EVERY = 50  # job numbers divisible by this fail for good (a failure with its reason)


def _mark(job_id: str) -> None:
    with Path(os.environ["CHAOS_TASK_MARKS"]).open("a") as out:
        out.write(f"{job_id}\n")  # one short O_APPEND write: whole lines even across processes


@tasks.task(name="chaos.work", max_attempts=10, timeout_s=30, backoff_base_s=0.1, backoff_cap_s=1.0)
async def work(ctx: pulse.Context, n: int) -> int:
    await asyncio.sleep(random.uniform(0.005, 0.05))  # long enough to be in flight at a kill
    if n % FAIL_EVERY == 0:
        raise ValueError(f"job {n} is refused for good")
    await asyncio.to_thread(_mark, ctx.job_id)
    return n
