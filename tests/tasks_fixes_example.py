"""Tasks that reproduce the reviewer's findings on user tasks (tests.test_task_fixes)."""

from __future__ import annotations

import asyncio
import threading

import pulse

tasks = pulse.Tasks()
release = threading.Event()  # set by the test: lets the hung threads end
hung = threading.Semaphore(0)  # one release per hung thread started
unhung: list[bool] = []  # one item per hung thread that ended


@tasks.task(name="fixes.leak", max_attempts=1)
def leak(secret: str) -> str:
    raise RuntimeError("signing key is " + secret)


@tasks.task(name="fixes.hang", timeout_s=0.2, max_attempts=1, concurrency=32)
def hang() -> str:
    """A plain def that never returns in time: its thread is stuck until ``release``."""
    hung.release()
    release.wait(30)
    unhung.append(True)
    return "late"


@tasks.task(name="fixes.quick", max_attempts=1)
def quick() -> str:
    return "quick"


@tasks.task(name="fixes.big", max_attempts=3)
def big(size: int) -> str:
    return "x" * size


@tasks.task(name="fixes.nan", max_attempts=1)
async def nan() -> float:
    return float("nan")


@tasks.task(name="fixes.nul_result", max_attempts=1)
async def nul_result() -> dict[str, str]:
    return {"v": "a\x00b"}


@tasks.task(name="fixes.nul_error", max_attempts=1)
async def nul_error() -> None:
    raise ValueError("bad\x00err")


@tasks.task(name="fixes.surrogate_error", max_attempts=1)
async def surrogate_error() -> None:
    raise ValueError("sur\ud800rogate")


class Unsayable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


@tasks.task(name="fixes.unsayable", max_attempts=1)
async def unsayable() -> None:
    raise Unsayable()


@tasks.task(name="fixes.nul_note", max_attempts=1)
async def nul_note(ctx: pulse.Context) -> str:
    await ctx.progress(0.5, "half\x00way")
    return "noted"


@tasks.task(name="fixes.noisy", max_attempts=1)
async def noisy(ctx: pulse.Context, size: int) -> str:
    await ctx.progress(0.5, "n" * size)
    return "noted"


starts: list[str] = []  # the tenant of each run of fixes.turn, in the order they started


@tasks.task(name="fixes.turn", concurrency=1)
async def turn(ctx: pulse.Context) -> str:
    starts.append(ctx.tenant_id)
    await asyncio.sleep(0.05)
    return ctx.tenant_id
