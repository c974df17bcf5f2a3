"""Reads priority streams through the consumer group and acknowledges what is done.

The blocking XREADGROUP runs on its own connection (redis-py takes one from the pool per
command); acknowledgement goes through ``lua/ack.lua`` so acknowledged entries leave the stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pulse.codec import UndecodableMessage, decode_job
from pulse.models import Job
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import load_script


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry handed to this consumer: its job, or why it could not be decoded."""

    stream: str
    entry_id: str
    job: Job | None
    error: UndecodableMessage | None = None


class Consumer:
    def __init__(self, redis: Redis, keys: QueueKeys, consumer: str) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self._ack = load_script(redis, "ack")

    @property
    def name(self) -> str:
        return self._consumer

    async def ensure_group(self) -> None:
        """Create the consumer group on every priority stream (idempotent)."""
        for stream in self._keys.streams():
            try:
                await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries from all priority streams, most urgent stream first."""
        streams: dict[Any, Any] = {stream: ">" for stream in self._keys.streams()}
        try:
            reply: Any = await self._redis.xreadgroup(
                CONSUMER_GROUP, self._consumer, streams, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis restarted empty: streams and group are gone
            return []
        entries: list[Entry] = []
        for stream, messages in sorted(reply or [], key=lambda item: _as_str(item[0])):
            entries.extend(
                _entry(_as_str(stream), entry_id, fields) for entry_id, fields in messages
            )
        return entries

    async def ack(self, entries: Sequence[Entry]) -> int:
        """Acknowledge and delete entries, one script call per stream, pipelined."""
        by_stream: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry.entry_id)
        if not by_stream:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                await self._ack(keys=[stream], args=[CONSUMER_GROUP, *ids], client=pipe)
            counts = await pipe.execute()
        return sum(int(count) for count in counts)


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Entry:
    ident = _as_str(entry_id)
    try:
        return Entry(stream=stream, entry_id=ident, job=decode_job(fields or {}))
    except UndecodableMessage as exc:
        return Entry(stream=stream, entry_id=ident, job=None, error=exc)
