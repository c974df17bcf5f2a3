"""What the queue holds right now, read from Redis in one pipeline of cheap commands.

Per priority stream: its depth (acknowledged entries are deleted, so XLEN counts what is not
finished), entries not yet read by any worker (the group's lag), pending ones (in a worker's
hand or waiting for a retry), the retry schedule, and the age of the oldest entry and of the
oldest pending one (an entry id carries its creation time). Per consumer (one per worker
process): entries in hand and how long since it last spoke to Redis, its heartbeat.

Issue 14 §1 adds ``pulse/queue/stats.py`` for Prometheus; ``read_overview`` is the one function
the dashboard calls, to be pointed at that module's snapshot once both have landed.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys

_COMMANDS_PER_STREAM = 6


class StreamState(msgspec.Struct, kw_only=True):
    priority: int
    depth: int
    waiting: int | None  # not yet read by any worker (None: Redis before 7.0 cannot tell)
    pending: int
    retrying: int
    oldest_age_ms: int | None
    oldest_pending_age_ms: int | None


class ConsumerState(msgspec.Struct, kw_only=True):
    name: str
    idle_ms: int  # since it last read, claimed or renewed: its heartbeat
    pending: int
    pending_by_priority: dict[int, int]


class QueueOverview(msgspec.Struct, kw_only=True):
    streams: list[StreamState]
    consumers: list[ConsumerState]
    dead_letters: int


async def read_overview(redis: Redis, keys: QueueKeys, now_ms: int) -> QueueOverview:
    """One round trip; a stream or group that does not exist yet reads as empty."""
    pipe = redis.pipeline(transaction=False)
    for stream in keys.streams():
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, CONSUMER_GROUP)
        pipe.zcard(keys.retry_schedule(stream))
        pipe.xrange(stream, "-", "+", count=1)
        pipe.xinfo_consumers(stream, CONSUMER_GROUP)
    pipe.xlen(keys.dead_letters())
    replies = await pipe.execute(raise_on_error=False)
    streams: list[StreamState] = []
    consumers: dict[str, ConsumerState] = {}
    for offset, priority in enumerate(range(MIN_PRIORITY, MAX_PRIORITY + 1)):
        start = offset * _COMMANDS_PER_STREAM
        chunk = replies[start : start + _COMMANDS_PER_STREAM]
        streams.append(_stream_state(priority, chunk, now_ms))
        _merge_consumers(consumers, priority, chunk[5])
    return QueueOverview(
        streams=streams,
        consumers=sorted(consumers.values(), key=lambda c: c.name),
        dead_letters=_int(replies[-1]),
    )


def _stream_state(priority: int, replies: list[Any], now_ms: int) -> StreamState:
    length, groups, pending, retrying, first, _ = replies
    summary = pending if isinstance(pending, dict) else {}
    return StreamState(
        priority=priority,
        depth=_int(length),
        waiting=_lag(groups),
        pending=int(summary.get("pending") or 0),
        retrying=_int(retrying),
        oldest_age_ms=_age(first[0][0] if isinstance(first, list) and first else None, now_ms),
        oldest_pending_age_ms=_age(summary.get("min"), now_ms),
    )


def _merge_consumers(found: dict[str, ConsumerState], priority: int, reply: Any) -> None:
    """A worker is one consumer on every stream: its heartbeat is its freshest contact."""
    if not isinstance(reply, list):
        return
    for row in reply:
        name = _text(row["name"])
        idle, pending = int(row["idle"]), int(row["pending"])
        state = found.setdefault(
            name, ConsumerState(name=name, idle_ms=idle, pending=0, pending_by_priority={})
        )
        state.idle_ms = min(state.idle_ms, idle)
        state.pending += pending
        if pending:
            state.pending_by_priority[priority] = pending


def _lag(groups: Any) -> int | None:
    if not isinstance(groups, list):
        return 0  # no stream yet: nothing waits
    for group in groups:
        if _text(group["name"]) == CONSUMER_GROUP:
            lag = group.get("lag")
            return None if lag is None else int(lag)
    return None


def _age(entry_id: Any, now_ms: int) -> int | None:
    if entry_id is None:
        return None
    created_ms = int(_text(entry_id).split("-", 1)[0])
    return max(0, now_ms - created_ms)


def _int(reply: Any) -> int:
    return reply if isinstance(reply, int) else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
