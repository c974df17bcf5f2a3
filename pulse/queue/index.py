"""Which jobs Redis knows about: the index kept by ``enqueue.lua`` and ``ack.lua``, one per
partition. A job is looked up in every partition this worker reads (a fallback step or a
receipt may live in another partition than its id alone would name), and only those: a job in
a partition it does not read (removed since, or one an API with a higher count appended to
after this worker stopped reading it, ``retirement.py``) counts as missing, and the
reconciler streams it again into a partition this worker reads. Should another worker still
read that partition, the copy costs a claim that finds the job finished or held, not a
second send."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys


class JobIndex:
    def __init__(
        self, redis: Redis, keys: QueueKeys, reading: Callable[[], Iterable[int]] | None = None
    ) -> None:
        """``reading``: the partitions read now (a worker's retirement knows); by default
        every partition ``keys`` spans."""
        self._redis = redis
        self._keys = keys
        self._reading = reading or (lambda: range(keys.span))

    async def missing(self, job_ids: Sequence[str]) -> list[str]:
        """The ids among ``job_ids`` that no stream of a partition read now holds."""
        if not job_ids:
            return []
        missing = list(job_ids)
        for partition in self._reading():
            key = self._keys.part(partition).index()
            found = await self._redis.hmget(key, missing)
            missing = [
                job_id for job_id, where in zip(missing, found, strict=True) if where is None
            ]
            if not missing:
                break
        return missing
