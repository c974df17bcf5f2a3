"""Reads priority streams through the consumer group and acknowledges what is done.

Reads come in two forms: a pipelined, non-blocking read with a count per stream (what the
weighted scheduler asks for), and a blocking read over every stream that only waits for work
when all were empty. What becomes of an entry after it is delivered is ``transitions.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, UndecodableMessage, decode_job
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import is_nogroup


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry handed to this consumer: its job, or why it could not be decoded.

    ``attempt`` is the stream's delivery count: 1 on the first read, +1 on every reclaim.
    """

    stream: str
    entry_id: str
    attempt: int
    job: Job | None
    error: UndecodableMessage | None = None

    @property
    def job_id(self) -> str:
        return self.job.id if self.job is not None else ""


class Consumer:
    def __init__(
        self, redis: Redis, keys: QueueKeys, consumer: str, streams: list[str] | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self.streams = streams if streams is not None else keys.streams()  # most urgent first
        self.gone = False  # a retiring partition's streams were removed: nothing left to read
        # Replies as Redis sends them: redis-py would make a dict of every entry's fields, a
        # cost per delivery on the hot path for the one field read here (``entries_of``).
        redis.set_response_callback("XREADGROUP", _as_sent)

    @property
    def name(self) -> str:
        return self._consumer

    @property
    def keys(self) -> QueueKeys:
        return self._keys

    @property
    def redis(self) -> Redis:
        return self._redis

    async def ensure_group(self) -> None:
        """Create the consumer group on every stream this consumer reads, and this consumer in
        it (idempotent): a worker shows as a consumer of every priority at once, even one whose
        work all comes through tenants' sub-streams."""
        for stream in self.streams:
            try:
                await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            await self._redis.xgroup_createconsumer(stream, CONSUMER_GROUP, self._consumer)

    async def read(self, counts: Mapping[str, int]) -> list[Entry]:
        """New entries, up to ``counts[stream]`` from each stream, in one round trip."""
        wanted = [(stream, count) for stream, count in counts.items() if count > 0]
        if not wanted:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, count in wanted:
                pipe.xreadgroup(CONSUMER_GROUP, self._consumer, {stream: ">"}, count=count)
            replies = await self._guard(pipe.execute(raise_on_error=True))
        entries: list[Entry] = []
        for reply in replies or []:
            entries.extend(entries_of(reply))
        return entries

    async def wait(self, count: int, block_ms: int) -> list[Entry]:
        """Block until any stream has new entries (or ``block_ms`` passes); read a few."""
        streams: dict[Any, Any] = {stream: ">" for stream in self.streams}
        reply = await self._guard(
            self._redis.xreadgroup(
                CONSUMER_GROUP, self._consumer, streams, count=count, block=block_ms
            )
        )
        return entries_of(reply)

    async def regroup(self) -> None:
        """A stream read has no group: Redis restarted empty, so make them again; but in a
        retiring partition it was removed empty (``drop_partition.lua``): making it again would
        leave keys behind, so mark this consumer ``gone`` (its fetcher ends)."""
        if self._keys.retiring:
            self.gone = True
            return
        await self.ensure_group()

    async def _guard(self, call: Any) -> Any:
        """Redis restarted empty: streams and group are gone; make them again, read nothing."""
        try:
            return await call
        except ResponseError as exc:
            if not is_nogroup(exc) and "UNBLOCKED" not in str(exc):  # a stream waited on went
                raise
            await self.regroup()
            return None


def as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _as_sent(response: Any, **kwargs: Any) -> Any:
    del kwargs
    return response


def entries_of(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply: ``[[stream, [[entry id, [field, value, ...]],
    ...]], ...]`` (RESP2; RESP3 sends a map of stream to entries)."""
    entries: list[Entry] = []
    streams = reply.items() if isinstance(reply, dict) else reply or []
    for stream, messages in streams:
        name = as_str(stream)
        for entry_id, fields in messages:
            entries.append(make_entry(name, as_str(entry_id), 1, _message(fields)))
    return entries


def _message(fields: list[bytes] | None) -> bytes | None:
    """The job's field among an entry's (None: the entry has none, or was deleted)."""
    for i in range(0, len(fields or ()) - 1, 2):
        if fields is not None and fields[i] == MESSAGE_FIELD:
            return fields[i + 1]
    return None


def make_entry(stream: str, entry_id: str, attempt: int, message: bytes | None) -> Entry:
    fields = {} if message is None else {MESSAGE_FIELD: message}
    try:
        return Entry(stream, entry_id, attempt, decode_job(fields))
    except UndecodableMessage as exc:
        return Entry(stream, entry_id, attempt, None, exc)
