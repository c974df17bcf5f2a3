"""Pending entries: leases of in-flight work, retry scheduling, and reclaiming.

An entry stays pending from the first read until it is acknowledged or dead-lettered. While a
worker delivers it, the worker renews its lease (``renew.lua``); when an attempt fails
temporarily, it is scheduled (``retry_later.lua``, in ``transitions.py``); the reclaimer takes
due and abandoned entries back (``reclaim.lua``). Each is one atomic script.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pulse.queue.consumer import Entry, as_str, make_entry
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import Call, by_stream, is_nogroup, load_script, per_stream, run_calls


class PendingEntries:
    def __init__(self, redis: Redis, keys: QueueKeys, consumer: str) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self._renew = load_script(redis, "renew")
        self._reclaim = load_script(redis, "reclaim")

    async def renew(self, entries: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Heartbeat (stream, entry id) pairs; return the ones another consumer has taken."""
        grouped = by_stream((stream, (entry_id,)) for stream, entry_id in entries)
        if not grouped:
            return []
        head = [CONSUMER_GROUP, self._consumer]
        calls = per_stream(self._renew, grouped, lambda stream: [stream], head)
        replies = await run_calls(self._redis, calls)
        for reply in replies:
            if isinstance(reply, ResponseError) and is_nogroup(reply):
                return []  # Redis restarted empty: nothing to renew; the fetcher regroups
            if isinstance(reply, Exception):
                raise reply
        return [
            (stream, as_str(entry_id))
            for stream, lost in zip(grouped, replies, strict=True)
            for entry_id in lost
        ]

    async def reclaim(self, stream: str, now_ms: int, lease_ms: int, limit: int) -> list[Entry]:
        """Claim entries of ``stream`` due for retry or abandoned longer than the lease."""
        [entries] = await self.reclaim_each([stream], now_ms, lease_ms, limit)
        return entries

    async def reclaim_each(
        self, streams: Sequence[str], now_ms: int, lease_ms: int, limit: int
    ) -> list[list[Entry]]:
        """``reclaim`` on each of ``streams`` (up to ``limit`` entries each) in one round
        trip: the tenants' sub-streams may be many. A stream without its group (Redis restarted
        empty, or a sub-stream retired meanwhile) has nothing to reclaim."""
        args: list[str | int] = [CONSUMER_GROUP, self._consumer, now_ms, lease_ms, limit]
        calls = [
            Call(self._reclaim, [stream, self._keys.retry_schedule_of(stream)], args)
            for stream in streams
        ]
        found: list[list[Entry]] = []
        for stream, flat in zip(streams, await run_calls(self._redis, calls), strict=True):
            if isinstance(flat, ResponseError) and is_nogroup(flat):
                flat = []
            elif isinstance(flat, Exception):
                raise flat
            found.append(
                [
                    make_entry(stream, as_str(flat[i]), int(flat[i + 1]), flat[i + 2] or None)
                    for i in range(0, len(flat), 3)
                ]
            )
        return found
