"""Moves a notification to the next step of its fallback chain (``lua/fallback.lua``)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.consumer import Entry
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import load_script


class FallbackStreams:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._fallback = load_script(redis, "fallback")

    async def advance(self, moves: Sequence[tuple[Entry, Job]]) -> None:
        """Replace each failed entry by a fresh entry of its next step, in one round trip."""
        if not moves:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry, following in moves:
                keys = [
                    entry.stream,
                    self._keys.stream(following.priority),
                    self._keys.index(),
                    self._keys.retry_schedule(entry.stream),
                ]
                message = encode_job(following)[MESSAGE_FIELD]
                args: list[str | bytes] = [CONSUMER_GROUP, entry.entry_id, following.id, message]
                await self._fallback(keys=keys, args=args, client=pipe)
            await pipe.execute()
