"""Tasks for the chain and group tests: a group's callback, and a step that writes its order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulse

tasks = pulse.Tasks()


@tasks.task(name="flows.total")
async def total(results: list[dict[str, Any] | None], label: str = "sum") -> dict[str, Any]:
    """A group's callback: ``results`` are its members' results, in the group's order."""
    return {label: sum(r["sum"] for r in results if r is not None), "parts": len(results)}


@tasks.task(name="flows.step")
def step(path: str, name: str) -> str:
    """Appends ``name`` to the file at ``path``: the order in which a chain ran."""
    with Path(path).open("a") as out:
        out.write(f"{name}\n")
    return name


@tasks.task(name="flows.quiet", keep_result_s=0)
async def quiet(fail: bool = False) -> int:
    """Results off: nothing but the job's own row records its runs."""
    if fail:
        raise ValueError("quietly failed")
    return 1


@tasks.task(name="flows.collect")
async def collect(ctx: pulse.Context, results: list[Any]) -> dict[str, Any]:
    """A group's callback that takes its members' job ids as well (``list[Any]``): what it
    was given, and why ids if so."""
    return {"results": results, "omitted": ctx.results_omitted}


@tasks.task(name="flows.strict")
async def strict(results: list[int]) -> int:
    """A callback that cannot take a member's missing (null) result."""
    return sum(results)
