"""Appends accepted jobs to the stream of their priority (``lua/enqueue.lua``)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script


class Publisher:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._enqueue = load_script(redis, "enqueue")

    async def publish(self, jobs: Sequence[Job]) -> list[bytes]:
        """XADD and index each job, all in one pipelined round trip; return the entry ids."""
        index = self._keys.index()
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                message = encode_job(job)[MESSAGE_FIELD]
                stream = self._keys.stream(job.priority)
                await self._enqueue(keys=[stream, index], args=[job.id, message], client=pipe)
            ids: list[bytes] = await pipe.execute()
        return ids
