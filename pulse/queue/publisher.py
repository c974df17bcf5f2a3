"""Appends accepted jobs to the stream of their priority (``lua/enqueue.lua``)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script

CHUNK = 500  # jobs per round trip: large enough to amortise it, small enough not to stall Redis


class Publisher:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._enqueue = load_script(redis, "enqueue")

    async def publish(self, jobs: Sequence[Job]) -> list[bytes]:
        """XADD and index each job, one pipelined round trip per ``CHUNK``; return the entry
        ids. Should a chunk fail, the ones before it are streamed."""
        ids: list[bytes] = []
        for start in range(0, len(jobs), CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                await self.stage(pipe, jobs[start : start + CHUNK])
                ids.extend(await pipe.execute())
        return ids

    async def stage(self, pipe: Pipeline, jobs: Sequence[Job]) -> None:
        """Queue the enqueue of ``jobs`` on a pipeline another transition executes."""
        index = self._keys.index()
        for job in jobs:
            message = encode_job(job)[MESSAGE_FIELD]
            stream = self._keys.stream(job.priority)
            await self._enqueue(keys=[stream, index], args=[job.id, message], client=pipe)
