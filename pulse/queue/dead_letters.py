"""The dead-letter stream: where entries go when retrying cannot help (``dead_letter.lua``, run
by ``transitions.py``); read and pruned here."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

from pulse.queue.consumer import as_str
from pulse.queue.keys import QueueKeys

SCAN_CHUNK = 500


class DeadLetterStream:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def length(self) -> int:
        """Entries in every partition's dead-letter stream."""
        total = 0
        for keys in self._keys.partition_keys():
            total += int(await self._redis.xlen(keys.dead_letters()))
        return total

    async def remove(self, job_ids: Collection[str], entry_ids: Collection[str] = ()) -> int:
        """Delete dead-letter entries of these jobs (or original entry ids): replay and purge."""
        removed = 0
        for keys in self._keys.partition_keys():
            removed += await self._remove(keys.dead_letters(), job_ids, entry_ids)
        return removed

    async def _remove(
        self, stream: str, job_ids: Collection[str], entry_ids: Collection[str]
    ) -> int:
        removed = 0
        cursor = "-"
        while True:
            chunk: Any = await self._redis.xrange(stream, min=cursor, max="+", count=SCAN_CHUNK)
            doomed = [
                entry_id
                for entry_id, fields in chunk
                if as_str(fields.get(b"job", b"")) in job_ids
                or as_str(fields.get(b"entry", b"")) in entry_ids
            ]
            if doomed:
                removed += int(await self._redis.xdel(stream, *doomed))
            if len(chunk) < SCAN_CHUNK:
                return removed
            cursor = "(" + as_str(chunk[-1][0])
