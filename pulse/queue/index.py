"""Which jobs Redis knows about: the index kept by ``enqueue.lua`` and ``ack.lua``, one per
partition. A job is looked up in every partition: a fallback step or a receipt may live in
another partition than its id alone would name."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys


class JobIndex:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = [partition.index() for partition in keys.partition_keys()]

    async def missing(self, job_ids: Sequence[str]) -> list[str]:
        """The ids among ``job_ids`` that no stream holds."""
        if not job_ids:
            return []
        missing = list(job_ids)
        for key in self._keys:
            found = await self._redis.hmget(key, missing)
            missing = [
                job_id for job_id, where in zip(missing, found, strict=True) if where is None
            ]
            if not missing:
                break
        return missing
