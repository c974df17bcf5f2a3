"""Loads the Lua scripts of ``lua/``, one file per atomic transition, and runs them per stream."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

T = TypeVar("T")


def load_script(redis: Redis, name: str) -> AsyncScript:
    """Register ``lua/<name>.lua`` with the client; redis-py runs it by EVALSHA thereafter."""
    source = resources.files("pulse.queue").joinpath("lua", f"{name}.lua").read_text()
    return redis.register_script(source)


def is_nogroup(exc: ResponseError) -> bool:
    """Redis restarted empty: the streams and their consumer group are gone (the fetcher makes
    them again; until then there is nothing to renew, reclaim or read)."""
    return "NOGROUP" in str(exc)


def by_stream(items: Iterable[tuple[str, Sequence[T]]]) -> dict[str, list[T]]:
    """Arguments gathered per stream, in first-seen order: one script call per stream."""
    grouped: dict[str, list[T]] = defaultdict(list)
    for stream, args in items:
        grouped[stream].extend(args)
    return grouped


async def per_stream(
    pipe: Pipeline,
    script: AsyncScript,
    grouped: Mapping[str, Sequence[Any]],
    keys: Callable[[str], list[str]],
    head: Sequence[Any],
) -> None:
    """Queue one call of ``script`` per stream on ``pipe``: KEYS from ``keys(stream)``, ARGV
    ``head`` then that stream's arguments."""
    for stream, args in grouped.items():
        await script(keys=keys(stream), args=[*head, *args], client=pipe)
