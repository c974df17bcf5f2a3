"""Loads the Lua scripts of ``lua/``, one file per atomic transition, and runs them per stream.

A batch of script calls goes to Redis by EVALSHA alone (``run_calls``): a redis-py pipeline that
holds scripts sends SCRIPT EXISTS for them before every execute, a round trip of its own per
batch. Should Redis have lost a script (restarted, or SCRIPT FLUSH), exactly the calls it
refused are run again once it is loaded: a refused call did nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

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


@dataclass(frozen=True, slots=True)
class Call:
    """One script call of a batch."""

    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[Any]


def per_stream(
    script: AsyncScript,
    grouped: Mapping[str, Sequence[Any]],
    keys: Callable[[str], list[str]],
    head: Sequence[Any],
) -> list[Call]:
    """One call of ``script`` per stream: KEYS from ``keys(stream)``, ARGV ``head`` then that
    stream's arguments."""
    return [Call(script, keys(stream), [*head, *args]) for stream, args in grouped.items()]


async def run_calls(redis: Redis, calls: Sequence[Call]) -> list[Any]:
    """Run ``calls`` in one pipelined round trip (by EVALSHA alone); each call's reply, or
    the error it raised, in order."""
    replies = await _evalsha(redis, calls)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if refused:
        for script in {id(calls[i].script): calls[i].script for i in refused}.values():
            await redis.script_load(script.script)
        again = await _evalsha(redis, [calls[i] for i in refused])
        for i, reply in zip(refused, again, strict=True):
            replies[i] = reply
    return replies


async def _evalsha(redis: Redis, calls: Sequence[Call]) -> list[Any]:
    if not calls:
        return []
    pipe: Pipeline
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies
