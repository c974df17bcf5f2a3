"""Appends accepted jobs to the stream of their priority."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.codec import encode_job
from pulse.models import Job
from pulse.queue.keys import QueueKeys


class Publisher:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, jobs: Sequence[Job]) -> list[bytes]:
        """XADD each job, all in one pipelined round trip; return the entry ids."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xadd(self._keys.stream(job.priority), encode_job(job))  # type: ignore[arg-type]
            ids: list[bytes] = await pipe.execute()
        return ids
