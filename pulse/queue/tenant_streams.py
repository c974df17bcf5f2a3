"""Tenants' sub-streams of each priority: appends that keep the set of active tenants exact,
the set as the fetcher reads it, and the retirement of sub-streams left empty.

A tenant's notifications of priority p wait in ``{prefix}:stream:<p>:t:<tenant>``; the set
``{prefix}:stream:<p>:tenants`` names every sub-stream that exists. Both change only inside
``enqueue_tenant.lua`` and ``retire_tenant.lua``, so a sub-stream is in the set exactly when it
exists with its consumer group. Everything keyed by an entry's stream name (ack, renew, retry
schedule, dead letters, the index) works per sub-stream unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY, Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.consumer import Entry, as_str, entries_of
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import Call, is_nogroup, load_script, run_calls


@dataclass(frozen=True, slots=True)
class Round:
    """What one fetch round read: the entries, the streams read that had no consumer group,
    and the tenants with a sub-stream at each priority."""

    entries: list[Entry]
    missing: list[str]
    active: dict[int, list[str]]


class TenantStreams:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._enqueue = load_script(redis, "enqueue_tenant")
        self._retire = load_script(redis, "retire_tenant")

    async def load(self) -> None:
        """Load the scripts again (Redis restarted or flushed them)."""
        await self._redis.script_load(self._enqueue.script)
        await self._redis.script_load(self._retire.script)

    def append_call(self, job: Job, message: bytes | None = None) -> Call:
        """The script call that appends ``job`` to its tenant's sub-stream of its priority."""
        keys = self._keys.of_job(job)  # the job's partition
        if message is None:
            message = encode_job(job)[MESSAGE_FIELD]
        return Call(
            self._enqueue,
            [keys.tenant_stream(job.priority, job.tenant_id), keys.index(),
             keys.tenants(job.priority), keys.wake()],
            [job.id, message, job.tenant_id, CONSUMER_GROUP],
        )  # fmt: skip

    async def append(self, jobs: Sequence[Job]) -> list[bytes]:
        """Append ``jobs`` in one round trip; their entry ids (the first error is raised)."""
        replies = await run_calls(self._redis, [self.append_call(job) for job in jobs])
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return [reply if isinstance(reply, bytes) else str(reply).encode() for reply in replies]

    async def active(self) -> dict[int, list[str]]:
        """Priority -> the tenants with a sub-stream there, in one round trip."""
        priorities = range(MIN_PRIORITY, MAX_PRIORITY + 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for priority in priorities:
                pipe.smembers(self._keys.tenants(priority))
            replies = await pipe.execute()
        return {
            p: sorted(as_str(t) for t in reply)
            for p, reply in zip(priorities, replies, strict=True)
        }

    async def retire(self, priority: int, tenants: Sequence[str]) -> list[str]:
        """Drop the sub-streams of ``tenants`` at ``priority`` that hold nothing any more;
        answer the tenants retired (those still holding work are left alone)."""
        retired = await self.retire_each({priority: tenants})
        return retired.get(priority, [])

    async def retire_each(self, dry: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
        """``retire`` at every priority of ``dry`` in one round trip (one script call per
        priority: its set is one key); the first error is raised."""
        wanted = {priority: tenants for priority, tenants in dry.items() if tenants}
        replies = await run_calls(self._redis, [self._retire_call(p, t) for p, t in wanted.items()])
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return {p: [as_str(t) for t in reply] for p, reply in zip(wanted, replies, strict=True)}

    def _retire_call(self, priority: int, tenants: Sequence[str]) -> Call:
        streams = [self._keys.tenant_stream(priority, t) for t in tenants]
        schedules = [self._keys.retry_schedule_of(s) for s in streams]
        return Call(self._retire, [self._keys.tenants(priority), *streams, *schedules], tenants)

    def streams_of(self, active: dict[int, list[str]]) -> list[str]:
        """Every sub-stream named by ``active``, most urgent priority first."""
        return [self._keys.tenant_stream(p, t) for p in sorted(active) for t in active[p]]

    async def read(self, consumer: str, counts: Mapping[str, int]) -> tuple[list[Entry], bool]:
        """New entries, up to ``counts[stream]`` from each stream, in one round trip, and
        whether a stream had no group (a sub-stream retired meanwhile reads as empty; a
        priority stream without one means Redis restarted: the caller makes the groups). The
        sets are not read: a caller that wants them too asks ``read_round``."""
        wanted = _wanted(counts)
        async with self._redis.pipeline(transaction=False) as pipe:
            _queue_reads(pipe, consumer, wanted)
            replies = await pipe.execute(raise_on_error=False)
        entries, missing = _entries_read(wanted, replies)
        return entries, bool(missing)

    async def read_round(self, consumer: str, counts: Mapping[str, int]) -> Round:
        """``read`` and ``active`` in one round trip: the fetcher plans each round from the
        sets the previous one read, so a tenant that became active is read one round later,
        and a round costs one round trip, as with the shared streams alone."""
        priorities = range(MIN_PRIORITY, MAX_PRIORITY + 1)
        wanted = _wanted(counts)
        async with self._redis.pipeline(transaction=False) as pipe:
            for priority in priorities:
                pipe.smembers(self._keys.tenants(priority))
            _queue_reads(pipe, consumer, wanted)
            replies = await pipe.execute(raise_on_error=False)
        sets, reads = replies[: len(priorities)], replies[len(priorities) :]
        for reply in sets:
            if isinstance(reply, BaseException):
                raise reply
        entries, missing = _entries_read(wanted, reads)
        active = {
            p: sorted(as_str(t) for t in reply) for p, reply in zip(priorities, sets, strict=True)
        }
        return Round(entries, missing, active)

    async def wait(
        self, consumer: str, streams: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """Block until any of ``streams`` (the wake stream among them) has new entries; the
        wake entries are acknowledged and dropped: they only ended the wait."""
        wanted: dict[Any, Any] = {stream: ">" for stream in streams}
        try:
            reply = await self._redis.xreadgroup(
                CONSUMER_GROUP, consumer, wanted, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "UNBLOCKED" not in str(exc) and not is_nogroup(exc):
                raise
            # A sub-stream waited on was retired meanwhile (UNBLOCKED), or between the look at
            # the sets and the wait (NOGROUP): look at the sets again.
            return []
        entries = entries_of(reply)
        wake = self._keys.wake()
        woken = [entry.entry_id for entry in entries if entry.stream == wake]
        if woken:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(wake, CONSUMER_GROUP, *woken)
                pipe.xdel(wake, *woken)
                await pipe.execute()
        return [entry for entry in entries if entry.stream != wake]


def _wanted(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(stream, count) for stream, count in counts.items() if count > 0]


def _queue_reads(pipe: Pipeline, consumer: str, wanted: Sequence[tuple[str, int]]) -> None:
    for stream, count in wanted:
        pipe.xreadgroup(CONSUMER_GROUP, consumer, {stream: ">"}, count=count)


def _entries_read(
    wanted: Sequence[tuple[str, int]], replies: Sequence[Any]
) -> tuple[list[Entry], list[str]]:
    """The entries of the reads' replies, and the streams that had no group."""
    entries: list[Entry] = []
    missing: list[str] = []
    for (stream, _), reply in zip(wanted, replies, strict=True):
        if isinstance(reply, ResponseError) and is_nogroup(reply):
            missing.append(stream)
        elif isinstance(reply, BaseException):
            raise reply
        else:
            entries.extend(entries_of(reply))
    return entries, missing
