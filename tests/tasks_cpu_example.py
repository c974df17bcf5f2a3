"""CPU-bound tasks (run in worker processes) and a task limited fleet-wide."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pulse

tasks = pulse.Tasks()


@tasks.task(name="cpu.square", cpu_bound=True)
def square(n: int) -> dict[str, int]:
    return {"square": n * n, "pid": os.getpid()}


@tasks.task(name="cpu.spin", cpu_bound=True, timeout_s=0.5, max_attempts=2, backoff_base_s=0.05)
def spin(marker: str) -> None:
    """Busy for ever (no await to cancel at): only killing its process stops it."""
    with Path(marker).open("a") as out:
        out.write(f"{os.getpid()}\n")
    while True:
        pass


@tasks.task(name="cpu.busy", cpu_bound=True, timeout_s=1.5, max_attempts=1)
def busy(seconds: float) -> int:
    """Busy for ``seconds`` of wall time."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return os.getpid()


@tasks.task(name="cpu.once_more", cpu_bound=True, max_attempts=3)
def once_more(marker: str) -> int:
    """Asks for a retry the first time (pulse.Retry crosses the process boundary)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        raise pulse.Retry(after=0.05, reason="not yet")
    return 2


@tasks.task(name="cpu.boom", cpu_bound=True, max_attempts=1)
def boom() -> None:
    raise ValueError("no good")


def _note(marker: str, event: str) -> None:
    with Path(marker).open("a") as out:
        out.write(f"{event}\n")


@tasks.task(name="fleet.hold", fleet_concurrency=2, concurrency=8)
async def hold(marker: str, seconds: float) -> None:
    """At most two of these run at once across every worker."""
    _note(marker, "start")
    await asyncio.sleep(seconds)
    _note(marker, "end")
