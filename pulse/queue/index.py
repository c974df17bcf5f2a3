"""Which jobs Redis knows about: the index kept by ``enqueue.lua`` and ``ack.lua``, one per
partition. A job is looked up in every partition: a fallback step or a receipt may live in
another partition than its id alone would name. Every partition counted in Redis now, not at
start: a partition removed since (``retirement.py``) is read by nobody, so a job an API with
an old count appended there after all is missing, and the reconciler streams it again."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys


class JobIndex:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def missing(self, job_ids: Sequence[str]) -> list[str]:
        """The ids among ``job_ids`` that no stream of a partition still in use holds."""
        if not job_ids:
            return []
        missing = list(job_ids)
        for key in await self._indexes():
            found = await self._redis.hmget(key, missing)
            missing = [
                job_id for job_id, where in zip(missing, found, strict=True) if where is None
            ]
            if not missing:
                break
        return missing

    async def _indexes(self) -> list[str]:
        """The indexes of the partitions read: the configured ones, and the retiring ones
        Redis still counts."""
        counted = int(await self._redis.get(self._keys.partition_count()) or 0)
        parts = self._keys.partition_keys()[: max(self._keys.partitions, counted)]
        return [part.index() for part in parts]
