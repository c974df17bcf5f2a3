"""An arq worker module as arq users write them, with only the import changed."""

from __future__ import annotations

from typing import Any

from pulse.compat.arq import Retry, cron, func


async def startup(ctx: dict[str, Any]) -> None:
    ctx["session"] = "a shared client"


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx.pop("session", None)


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def describe(ctx: dict[str, Any], *words: str, sep: str = " ") -> dict[str, Any]:
    return {
        "text": sep.join(words),
        "session": ctx["session"],
        "job_id": ctx["job_id"],
        "job_try": ctx["job_try"],
        "enqueued": ctx["enqueue_time"].isoformat(),
    }


async def patient(ctx: dict[str, Any], tries_needed: int) -> int:
    if ctx["job_try"] < tries_needed:
        raise Retry(defer=0.05)
    return int(ctx["job_try"])


async def heartbeat(ctx: dict[str, Any]) -> str:
    return f"beat {ctx['session']}"


class WorkerSettings:
    functions = [add, describe, func(patient, name="patient", max_tries=4, timeout=30)]
    on_startup = startup
    on_shutdown = shutdown
    job_timeout = 60
    max_tries = 2
    max_jobs = 3
    cron_jobs = [cron(heartbeat, name="heartbeat", minute={0, 30}, run_at_startup=True)]
