"""A task module as a user writes one; the task tests run it (``--tasks tests.tasks_example``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pulse

tasks = pulse.Tasks()


@tasks.on_startup
async def open_resources(resources: dict[str, Any]) -> None:
    resources["greeting"] = "Hello"


@tasks.task(name="example.add")
async def add(ctx: pulse.Context, a: int, b: int = 0) -> dict[str, int]:
    await ctx.progress(0.5, "adding")
    return {"sum": a + b, "attempt": ctx.attempt}


@tasks.task(name="example.greet")
def greet(ctx: pulse.Context, name: str) -> str:
    """A plain function: runs in a thread."""
    return f"{ctx['greeting']}, {name} ({ctx.idempotency_key})"


@tasks.task(name="example.flaky", max_attempts=5)
async def flaky(ctx: pulse.Context, succeed_on: int) -> int:
    if ctx.attempt < succeed_on:
        raise pulse.Retry(after=0.05, reason=f"attempt {ctx.attempt} is too early")
    return ctx.attempt


@tasks.task(name="example.slow", timeout_s=0.3, max_attempts=2, backoff_base_s=0.05)
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@tasks.task(name="example.fragile", max_attempts=3)
def fragile(path: str) -> str:
    """Fails for good until the file at ``path`` exists (dead letter, then replay)."""
    return Path(path).read_text()


def _mark(marker: str, attempt: int) -> None:
    with Path(marker).open("a") as out:
        out.write(f"{attempt}\n")


@tasks.task(name="example.sleeper", timeout_s=120)
async def sleeper(ctx: pulse.Context, seconds: float, marker: str | None = None) -> int:
    """Writes a line per start to ``marker`` (a SIGKILLed run leaves its line), then sleeps."""
    if marker is not None:
        await asyncio.to_thread(_mark, marker, ctx.attempt)
    await ctx.progress(0.1, "sleeping")
    await asyncio.sleep(seconds)
    return ctx.attempt


@tasks.task(name="example.flaky_io", retry_on=(ConnectionError,), backoff_base_s=0.05)
async def flaky_io(ctx: pulse.Context) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("the far end hung up")
    return ctx.attempt


@tasks.task(name="example.ephemeral", keep_result_s=0.2)
async def ephemeral() -> str:
    """Its result is kept for 0.2 s only."""
    return "gone soon"
