"""Streaming a released job once, however many workers heard of its release."""

from __future__ import annotations

from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script


class Releases:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._keys = keys
        self._enqueue = load_script(redis, "enqueue_once")

    async def stream(self, job: Job) -> bool:
        """Append ``job`` unless Redis holds it already; True if this call appended it."""
        message = encode_job(job)[MESSAGE_FIELD]
        partition = self._keys.of_job(job)
        keys = [partition.stream_of(job), partition.index()]
        return await self._enqueue(keys=keys, args=[job.id, message]) is not None
