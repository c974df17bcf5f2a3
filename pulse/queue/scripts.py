"""Loads the Lua scripts of ``lua/``, one file per atomic transition, and runs them per stream.

A batch of script calls goes to Redis by EVALSHA alone (``run_calls``): a redis-py pipeline that
holds scripts sends SCRIPT EXISTS for them before every execute, a round trip of its own per
batch. Should Redis have lost a script (restarted, or SCRIPT FLUSH), exactly the calls it
refused are run again once it is loaded: a refused call did nothing.

On a Redis Cluster a pipeline goes to each node apart, and a node that just died (a failover)
answers its share of the calls with a connection error while the others are applied; those
calls are sent again after a pause, once the client has found the promoted replica
(``resend_refused``). As with the plain client's reconnect retry, a call whose reply was lost
may run twice: every script tolerates that (an enqueue may leave a second entry, which the
claim answers as held or finished).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterDownError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

T = TypeVar("T")
# A cluster node gone or its slots moving: the calls it refused are sent again after these
# pauses (seconds), then answered with the error.
FAILOVER_PAUSES_S = (0.2, 0.5, 1.0, 2.0)
FAILOVER_ERRORS = (RedisConnectionError, ClusterDownError, TryAgainError)


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

    async def send(some: Sequence[Call]) -> list[Any]:
        return await _evalsha(redis, some)

    async def reload(some: Sequence[Call]) -> None:
        for script in {id(call.script): call.script for call in some}.values():
            await redis.script_load(script.script)

    return await resend_refused(calls, await send(calls), send, reload)


async def resend_refused(
    items: Sequence[T],
    replies: list[Any],
    send: Callable[[Sequence[T]], Awaitable[list[Any]]],
    reload: Callable[[Sequence[T]], Awaitable[None]],
) -> list[Any]:
    """``replies`` (one per item) with the refused items sent again: those whose script Redis
    had lost once ``reload`` has loaded it, those a failover cut off after a pause."""
    for pause in (0.0, *FAILOVER_PAUSES_S):
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        cut = [i for i, reply in enumerate(replies) if isinstance(reply, FAILOVER_ERRORS)]
        if cut and pause == FAILOVER_PAUSES_S[-1]:
            cut = []  # given up: those items keep their error
        if not lost and not cut:
            break
        if lost:
            await reload([items[i] for i in lost])
        if cut:
            await asyncio.sleep(pause)
        again_at = lost + cut
        again = await send([items[i] for i in again_at])
        for i, reply in zip(again_at, again, strict=True):
            replies[i] = reply
    return replies


def queue_evalsha(pipe: Pipeline, sha: str, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue an EVALSHA on ``pipe``. Sent as a raw command: a cluster client's pipeline refuses
    its ``evalsha`` method, yet routes the raw command by its keys' slot like any other (every
    script here names one slot), one batch per node."""
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)


async def _evalsha(redis: Redis, calls: Sequence[Call]) -> list[Any]:
    if not calls:
        return []
    pipe: Pipeline
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            queue_evalsha(pipe, call.script.sha, call.keys, call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies
