"""Cancellation of running tasks, told to every worker over Redis pub/sub.

The API commits the cancellation first (the row is ``cancelled``, so no worker claims it
again); this message only stops a run in progress. A worker that misses it (reconnecting at
that moment) lets the run finish, and its outcome is not recorded (only a running row moves):
the job stays ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from pulse.queue.client import open_pubsub
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys

logger = logging.getLogger("pulse.queue.job_cancels")
RESUBSCRIBE_AFTER_S = 0.5


class JobCancels:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._channel = keys.job_cancels()

    async def announce(self, job_id: str) -> int:
        """Tell every worker; return how many are listening."""
        receivers: int = await self._redis.publish(self._channel, job_id)
        return receivers

    async def follow(self, on_cancel: Callable[[str], object]) -> None:
        """Call ``on_cancel(job_id)`` for every cancellation, until cancelled."""
        while True:
            try:
                async with await open_pubsub(self._redis) as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            data = message["data"]
                            on_cancel(data.decode() if isinstance(data, bytes) else str(data))
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("job cancellations unreachable (%s); resubscribing", exc)
            await asyncio.sleep(RESUBSCRIBE_AFTER_S)
