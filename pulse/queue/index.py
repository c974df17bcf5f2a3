"""Which jobs Redis knows about: the index kept by ``enqueue.lua`` and ``ack.lua``."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys


class JobIndex:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._key = keys.index()

    async def missing(self, job_ids: Sequence[str]) -> list[str]:
        """The ids among ``job_ids`` that no stream holds."""
        if not job_ids:
            return []
        found = await self._redis.hmget(self._key, list(job_ids))
        return [job_id for job_id, where in zip(job_ids, found, strict=True) if where is None]
