"""Providers' token buckets in Redis (``throttle.lua``), shared by every worker process.

The caller passes the time in (see pulse/queue/limiter.py on clocks); one script call takes a
token or answers how long to wait, atomically, so two workers never take the last token twice.
"""

from __future__ import annotations

from redis.asyncio import Redis

from pulse.core.limits import Rate
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script
from pulse.queue.ticks import TickBatcher


class ProviderBuckets:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._keys = keys
        self._calls = TickBatcher(redis, load_script(redis, "throttle"))

    async def take(self, provider: str, rate: Rate, now_ms: float) -> int:
        """0 when a token was taken (send now), else the ms to wait before asking again."""
        args = [now_ms, rate.per_s / 1000.0, rate.burst]
        wait = await self._calls.call([self._keys.provider_bucket(provider)], args)
        return int(wait)
