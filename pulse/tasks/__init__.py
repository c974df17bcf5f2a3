"""User task functions: what an application imports to declare background jobs.

    tasks = pulse.Tasks()

    @tasks.task(name="reports.build", timeout_s=600, retry_on=(ConnectionError,))
    async def build_report(ctx: pulse.Context, month: str) -> dict[str, int]:
        await ctx.progress(0.5, "half way")
        return {"rows": 12}

Nothing here imports the server (no Redis, PostgreSQL or aiohttp): a module of tasks is
imported by the worker (``pulse worker --tasks myapp.tasks``) and by whatever code enqueues.
"""

from pulse.tasks.context import Context
from pulse.tasks.registry import Retry, Task, TaskOptions, Tasks

__all__ = ["Context", "Retry", "Task", "TaskOptions", "Tasks"]
