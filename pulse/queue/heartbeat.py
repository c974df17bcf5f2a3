"""Workers' heartbeats (``lua/heartbeat.lua``): who is alive, since when, and what it is doing.

Each worker writes its heartbeat every ``BEAT_INTERVAL_S``; a reader counts a worker alive while
its last heartbeat is younger than ``LIVE_AFTER_MS`` (a few missed beats), and a worker silent
for ``FORGET_AFTER_MS`` is removed by the next heartbeat of any worker. A worker stopping
gracefully leaves at once. The stream's consumer list cannot serve: a consumer stays listed
after its process is gone, and it says nothing of what the process is doing.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script

BEAT_INTERVAL_S = 2.0
LIVE_AFTER_MS = 10_000
FORGET_AFTER_MS = 600_000


class WorkerBeat(msgspec.Struct, frozen=True, kw_only=True):
    """One worker's last heartbeat."""

    name: str  # its consumer name in the group
    host: str
    pid: int
    started_at_ms: int
    seen_at_ms: int  # when this heartbeat was written (the worker's clock)
    channels: list[str]
    in_flight: int  # deliveries in its hands (leases held), from read to settled
    settling: int  # finished attempts waiting to be recorded


class Heartbeats:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._keys = [keys.workers(), keys.workers_seen()]
        self._script = load_script(redis, "heartbeat")

    async def beat(self, beat: WorkerBeat) -> None:
        await self._run(beat.name, msgspec.json.encode(beat), beat.seen_at_ms)

    async def leave(self, name: str, now_ms: int) -> None:
        await self._run(name, b"", now_ms)

    async def _run(self, name: str, body: bytes, now_ms: int) -> None:
        await self._script(keys=self._keys, args=[name, body, now_ms, FORGET_AFTER_MS])
