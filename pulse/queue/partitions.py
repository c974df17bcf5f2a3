"""The partition count Redis remembers, and the removal of a retiring partition once empty.

Every process raises the remembered count to its own at start (``remember_partitions.lua``)
and serves that many partitions; those above its configured count are retiring. A retiring
partition is removed whole by ``drop_partition.lua`` (a look and a deletion in one script),
after its dead letters were moved to partition 0's dead-letter stream; the count is then
lowered (``lower_partitions.lua``). The count and a partition are under different hash tags,
so these are separate calls, each safe to repeat: a crash between them leaves a removed
partition that the next pass finds empty (removed again: nothing) and the count lowered then.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY
from pulse.queue.consumer import as_str
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.live_counts import LiveCounts
from pulse.queue.scripts import load_script

MOVE_CHUNK = 500  # dead letters moved per round trip
logger = logging.getLogger("pulse.queue.partitions")


async def served_keys(redis: Redis, keys: QueueKeys) -> QueueKeys:
    """``keys`` serving every partition in use: this process said alive with its count, then
    its count raised into Redis. Alive first: a worker on fewer partitions that sees the raise
    sees this process too, so it removes none of them while this one starts."""
    await LiveCounts(redis, keys).refresh()
    return keys.serving_up_to(await PartitionCount(redis, keys).remember())


async def known_keys(redis: Redis, keys: QueueKeys) -> QueueKeys:
    """``keys`` serving every partition in use, the count left as it is: a one-off command
    (``pulse dlq``) run with a stale count must not keep partitions alive."""
    known = await redis.get(keys.partition_count())
    return keys.serving_up_to(int(known or 0))


async def served_if_reachable(redis: Redis, keys: QueueKeys) -> QueueKeys:
    """``served_keys``, or ``keys`` alone when Redis cannot be asked: the API starts without
    Redis (it answers 503 until Redis is back). It only reads retiring partitions for the
    queue gauges and the dead-letter copies that replay and purge remove, and appends to the
    configured ones either way."""
    try:
        return await served_keys(redis, keys)
    except TRANSIENT_REDIS_ERRORS as exc:
        logger.warning("partition count not read (%s): serving %d", exc, keys.partitions)
        return keys


class PartitionCount:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._remember = load_script(redis, "remember_partitions")
        self._lower = load_script(redis, "lower_partitions")
        self._drop = load_script(redis, "drop_partition")

    async def remember(self) -> int:
        """Raise the remembered count to the configured one; the count remembered now."""
        key = self._keys.partition_count()
        return int(await self._remember(keys=[key], args=[self._keys.partitions]))

    async def lower(self, removed: int) -> int:
        """The partition ``removed`` (the top one) is gone: remember one fewer."""
        key = self._keys.partition_count()
        return int(await self._lower(keys=[key], args=[removed + 1, removed]))

    async def drop(self, part: QueueKeys) -> bool:
        """Delete every key of ``part`` if it holds nothing; whether it is gone."""
        streams = [*part.streams(), *part.task_streams()]
        looked = [
            *(QueueKeys.retry_schedule_of(s) for s in streams),
            *part.all_scheduled(),
            *part.all_task_scheduled(),
            *(part.tenants(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)),
            part.dead_letters(),
        ]
        blind = [part.scheduled_jobs(), part.index(), part.wake()]
        reply = await self._drop(
            keys=[*streams, *looked, *blind], args=[len(streams), len(blind), CONSUMER_GROUP]
        )
        return int(reply) == 1

    async def move_dead_letters(self, part: QueueKeys) -> int:
        """Move ``part``'s dead letters to partition 0's stream, fields kept (replay and purge
        find them there by job or entry id); how many moved. A crash between a chunk's copy
        and its deletion leaves a second copy, which replay and purge remove with the first."""
        source, target = part.dead_letters(), part.part(0).dead_letters()
        moved = 0
        while True:
            chunk: Any = await self._redis.xrange(source, count=MOVE_CHUNK)
            if not chunk:
                return moved
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, fields in chunk:
                    pipe.xadd(target, {**fields, b"moved_from": source})
                await pipe.execute()
            await self._redis.xdel(source, *(as_str(entry_id) for entry_id, _ in chunk))
            moved += len(chunk)
