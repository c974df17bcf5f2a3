"""The queue's state at a glance, read from Redis with cheap commands: one snapshot, typed.

What an operator asks first (how deep is each priority, how old is its oldest message, how far
behind are the workers, is anyone consuming at all) is answered from one pipelined round trip:
per stream (the notifications' and the user tasks') XLEN, XINFO GROUPS, the XPENDING summary,
the first entry, the retry schedule's size and next due time; the dead-letter stream's length;
the workers' heartbeats (``heartbeat.py``): live ones, and silent ones not yet forgotten (a
crash shows as a worker gone quiet). Redis's own clock (TIME) dates everything, so ages never
suffer from this host's clock.

This is the one reader of the queue's state: the Prometheus collector (``pulse.metrics``) and
the dashboard (``pulse.http.dashboard``) both read it here. The snapshot is cached for
``max_age_s`` (a second): scrapes and every open dashboard share one read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from itertools import zip_longest
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY
from pulse.queue.consumer import as_str
from pulse.queue.heartbeat import FORGET_AFTER_MS, LIVE_AFTER_MS, WorkerBeat
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys

DEFAULT_MAX_AGE_S = 1.0
REPLIES_PER_STREAM = 6
MAX_TENANT_STREAMS = 1000  # sub-streams read in full per snapshot at most (all count in depth)
DEPTH_CHUNK = 2000  # XLENs per round trip


class StreamState(msgspec.Struct, frozen=True, kw_only=True):
    """One priority stream as the consumer group sees it (acknowledged entries are deleted, so
    every entry still in the stream is work not yet done)."""

    priority: int
    depth: int  # entries not yet delivered: waiting to be read, or pending
    lag: int  # entries the group has not read yet
    pending: int  # read, not acknowledged: in a worker's hands or waiting for a retry
    oldest_age_s: float | None  # the oldest entry not yet done (None: the stream is empty)
    oldest_pending_age_s: float | None  # the oldest pending entry (None: nothing pending)
    retry_waiting: int  # pending entries scheduled for another attempt
    next_retry_in_s: float | None  # when the next of those is due (negative: overdue)
    consumers: int  # consumers the group knows on this stream (dead ones stay listed)


class QueueSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every stream, the dead letters and the workers, as of ``taken_at_ms`` (Redis time)."""

    taken_at_ms: int
    streams: list[StreamState]
    dead_letters: int  # entries in the dead-letter stream (replayed or purged ones leave it)
    workers: list[WorkerBeat]  # workers whose last heartbeat is recent enough to be alive
    silent_workers: list[WorkerBeat]  # silent since, but for less than FORGET_AFTER_MS
    task_streams: list[StreamState] = msgspec.field(default_factory=list)  # user tasks'

    @property
    def depth(self) -> int:
        return sum(stream.depth for stream in self.streams)

    @property
    def task_depth(self) -> int:
        return sum(stream.depth for stream in self.task_streams)


class QueueStats:
    """Reads snapshots, at most one per ``max_age_s``; concurrent callers share one read."""

    def __init__(
        self,
        redis: Redis,
        keys: QueueKeys,
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        live_after_ms: int = LIVE_AFTER_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._max_age_s = max_age_s
        self._live_after_ms = live_after_ms
        self._clock = clock
        self._lock = asyncio.Lock()
        self._latest: QueueSnapshot | None = None
        self._window = 0  # where the next snapshot's full reads of tenants' lanes start
        self._taken = 0.0

    @property
    def latest(self) -> QueueSnapshot | None:
        """The last snapshot read (None before the first): what a synchronous reader uses."""
        return self._latest

    async def snapshot(self) -> QueueSnapshot:
        async with self._lock:
            if self._latest is None or self._clock() - self._taken >= self._max_age_s:
                self._latest = await self._read()
                self._taken = self._clock()
            return self._latest

    async def of_tenant(self, tenant_id: str, shared: QueueSnapshot) -> QueueSnapshot:
        """What one tenant may see of the queue: ``shared`` with the priorities' states read
        from its own lanes only (another tenant's backlog is not its business) and neither the
        task streams (shared by every tenant) nor the dead letters' count (its own are in
        PostgreSQL)."""
        states = [_empty(priority) for priority in range(MIN_PRIORITY, MAX_PRIORITY + 1)]
        for keys in self._keys.partition_keys():
            lanes = [
                (priority, keys.tenant_stream(priority, tenant_id))
                for priority in range(MIN_PRIORITY, MAX_PRIORITY + 1)
            ]
            states = await self._summed(keys, states, lanes, shared.taken_at_ms)
        return msgspec.structs.replace(shared, streams=states, task_streams=[], dead_letters=0)

    async def _read(self) -> QueueSnapshot:
        """Every partition's state, summed per priority (``PULSE_REDIS_PARTITIONS``)."""
        partitions = self._keys.partition_keys()
        snapshot = await self._read_partition(partitions[0])
        for keys in partitions[1:]:
            other = await self._read_partition(keys)
            snapshot = msgspec.structs.replace(
                snapshot,
                streams=[_sum(a, b) for a, b in zip(snapshot.streams, other.streams, strict=True)],
                task_streams=[
                    _sum(a, b)
                    for a, b in zip(snapshot.task_streams, other.task_streams, strict=True)
                ],
                dead_letters=snapshot.dead_letters + other.dead_letters,
            )
        return snapshot

    async def _read_partition(self, keys: QueueKeys) -> QueueSnapshot:
        streams = keys.streams() + keys.task_streams()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for stream in streams:
                _ask_state(pipe, keys, stream)
            pipe.xlen(keys.dead_letters())
            pipe.hgetall(keys.workers())
            for priority in range(MIN_PRIORITY, MAX_PRIORITY + 1):
                pipe.smembers(keys.tenants(priority))
            replies = await pipe.execute(raise_on_error=False)
        _raise_unless_missing(replies)
        levels = MAX_PRIORITY - MIN_PRIORITY + 1  # one tenant set per priority, asked last
        tenant_sets, replies = replies[-levels:], replies[:-levels]
        seconds, micros = replies[0]
        now = int(seconds) * 1000 + int(micros) // 1000
        per_stream = replies[1:-2]
        priorities = range(MIN_PRIORITY, MAX_PRIORITY + 1)
        states = [
            _stream_state(priority, per_stream[i * REPLIES_PER_STREAM :][:REPLIES_PER_STREAM], now)
            for i, priority in enumerate([*priorities, *priorities])
        ]
        beats = _beats(replies[-1], now)
        by_priority = await self._with_tenants(keys, states[: len(priorities)], tenant_sets, now)
        return QueueSnapshot(
            taken_at_ms=now,
            streams=by_priority,
            task_streams=states[len(priorities) :],
            dead_letters=int(replies[-2]),
            workers=[b for b in beats if now - b.seen_at_ms <= self._live_after_ms],
            silent_workers=[b for b in beats if now - b.seen_at_ms > self._live_after_ms],
        )

    async def _with_tenants(
        self, keys: QueueKeys, states: list[StreamState], tenant_sets: Sequence[Any], now: int
    ) -> list[StreamState]:
        """Each priority's state with its tenants' sub-streams summed in (PULSE_TENANT_FAIRNESS):
        series stay per priority, whatever the number of tenants. Every sub-stream's length
        counts in ``depth`` (one XLEN each); the rest (lag, pending, ages, retries) is read from
        at most ``MAX_TENANT_STREAMS`` of them per snapshot, taken from every priority in turn
        and turning over them from snapshot to snapshot, so a busy deployment's gauges never
        cost Redis six commands per tenant (and each lane is seen every few snapshots)."""
        per_priority = [
            [(priority, keys.tenant_stream(priority, as_str(t))) for t in sorted(members)]
            if isinstance(members, set)
            else []
            for priority, members in zip(
                range(MIN_PRIORITY, MAX_PRIORITY + 1), tenant_sets, strict=True
            )
        ]
        interleaved = [lane for lanes in zip_longest(*per_priority) for lane in lanes if lane]
        if len(interleaved) > MAX_TENANT_STREAMS:  # a window turning from snapshot to snapshot
            start = self._window % len(interleaved)
            self._window = start + MAX_TENANT_STREAMS
            interleaved = interleaved[start:] + interleaved[:start]
        wanted, rest = interleaved[:MAX_TENANT_STREAMS], interleaved[MAX_TENANT_STREAMS:]
        states = await self._depths(states, rest)
        return await self._summed(keys, states, wanted, now)

    async def _summed(
        self, keys: QueueKeys, states: list[StreamState], wanted: Sequence[tuple[int, str]],
        now: int,
    ) -> list[StreamState]:  # fmt: skip
        """``states`` with the full state of each lane in ``wanted`` summed into its priority."""
        if not wanted:
            return states
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, stream in wanted:
                _ask_state(pipe, keys, stream)
            replies = await pipe.execute(raise_on_error=False)
        _raise_unless_missing(replies)
        merged = list(states)
        for i, (priority, _) in enumerate(wanted):
            part = _stream_state(
                priority, replies[i * REPLIES_PER_STREAM :][:REPLIES_PER_STREAM], now
            )
            merged[priority - MIN_PRIORITY] = _sum(merged[priority - MIN_PRIORITY], part)
        return merged

    async def _depths(
        self, states: list[StreamState], lanes: Sequence[tuple[int, str]]
    ) -> list[StreamState]:
        """``states`` with the lengths of ``lanes`` added to their priority's depth."""
        merged = list(states)
        for start in range(0, len(lanes), DEPTH_CHUNK):
            chunk = lanes[start : start + DEPTH_CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, stream in chunk:
                    pipe.xlen(stream)
                lengths = await pipe.execute()
            for (priority, _), length in zip(chunk, lengths, strict=True):
                at = priority - MIN_PRIORITY
                depth = merged[at].depth + int(length)
                merged[at] = msgspec.structs.replace(merged[at], depth=depth)
        return merged


def _ask_state(pipe: Pipeline, keys: QueueKeys, stream: str) -> None:
    """The ``REPLIES_PER_STREAM`` commands ``_stream_state`` reads one stream's state from."""
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, CONSUMER_GROUP)
    pipe.xrange(stream, count=1)
    pipe.zcard(keys.retry_schedule_of(stream))
    pipe.zrange(keys.retry_schedule_of(stream), 0, 0, withscores=True)


def _sum(a: StreamState, b: StreamState) -> StreamState:
    """Two streams of one priority as one: counts add up, the oldest and the soonest win."""
    return StreamState(
        priority=a.priority,
        depth=a.depth + b.depth,
        lag=a.lag + b.lag,
        pending=a.pending + b.pending,
        oldest_age_s=_most(max, a.oldest_age_s, b.oldest_age_s),
        oldest_pending_age_s=_most(max, a.oldest_pending_age_s, b.oldest_pending_age_s),
        retry_waiting=a.retry_waiting + b.retry_waiting,
        next_retry_in_s=_most(min, a.next_retry_in_s, b.next_retry_in_s),
        consumers=max(a.consumers, b.consumers),
    )


def _most(pick: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)


def _raise_unless_missing(replies: Sequence[Any]) -> None:
    """A stream or group that does not exist yet (no worker ever started) reads as empty; any
    other error is raised."""
    for reply in replies:
        if isinstance(reply, Exception) and not _missing(reply):
            raise reply


def _missing(error: Exception) -> bool:
    text = str(error)
    return "NOGROUP" in text or "no such key" in text


def _stream_state(priority: int, replies: Sequence[Any], now: int) -> StreamState:
    depth, groups, summary, first, retry_waiting, next_retry = replies
    group = _group(groups)
    pending = _count(summary, "pending")
    lag = group.get("lag") if group else None
    oldest_pending = summary.get("min") if isinstance(summary, dict) and pending else None
    return StreamState(
        priority=priority,
        depth=int(depth),
        # Redis cannot always tell the lag after deletions; Pulse deletes every entry it
        # acknowledges, so what is neither pending nor gone is unread.
        lag=int(lag) if lag is not None else max(0, int(depth) - pending),
        pending=pending,
        oldest_age_s=_age(first[0][0], now) if _is_list(first) and first else None,
        oldest_pending_age_s=_age(oldest_pending, now) if oldest_pending else None,
        retry_waiting=int(retry_waiting) if not isinstance(retry_waiting, Exception) else 0,
        next_retry_in_s=(next_retry[0][1] - now) / 1000 if _is_list(next_retry) else None,
        consumers=int(group.get("consumers", 0)) if group else 0,
    )


def _group(groups: Any) -> dict[str, Any] | None:
    if not _is_list(groups):
        return None
    return next((g for g in groups if as_str(g.get("name", b"")) == CONSUMER_GROUP), None)


def _count(summary: Any, field: str) -> int:
    return int(summary.get(field) or 0) if isinstance(summary, dict) else 0


def _is_list(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply)


def _age(entry_id: bytes | str, now: int) -> float:
    """An entry id starts with the Redis time (ms) it was added at."""
    return max(0.0, (now - int(as_str(entry_id).split("-", 1)[0])) / 1000)


def _beats(raw_beats: Any, now: int) -> list[WorkerBeat]:
    """Every heartbeat younger than ``FORGET_AFTER_MS``, by name: the script forgets older ones
    only when some worker beats, so a reader must not wait for it."""
    beats = []
    for raw in (raw_beats or {}).values():
        try:
            beat = msgspec.json.decode(raw, type=WorkerBeat)
        except msgspec.DecodeError:
            continue  # a heartbeat of another version: that worker shows up once upgraded
        if now - beat.seen_at_ms <= FORGET_AFTER_MS:
            beats.append(beat)
    return sorted(beats, key=lambda beat: beat.name)


def _empty(priority: int) -> StreamState:
    return StreamState(
        priority=priority, depth=0, lag=0, pending=0, oldest_age_s=None,
        oldest_pending_age_s=None, retry_waiting=0, next_retry_in_s=None, consumers=0,
    )  # fmt: skip
