"""Loads the Lua scripts of ``lua/``, one file per atomic transition."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def load_script(redis: Redis, name: str) -> AsyncScript:
    """Register ``lua/<name>.lua`` with the client; redis-py runs it by EVALSHA thereafter."""
    source = resources.files("pulse.queue").joinpath("lua", f"{name}.lua").read_text()
    return redis.register_script(source)
