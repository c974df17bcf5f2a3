"""Says every few seconds that this worker is alive and what it is doing (``queue/heartbeat.py``).

The operator's "is anyone consuming at all" and the dashboard's list of workers read these
heartbeats; a worker stopping gracefully leaves at once, a crashed one goes silent and stops
counting as alive after ``LIVE_AFTER_MS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence

from pulse.core.timeutil import now_ms
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.heartbeat import BEAT_INTERVAL_S, Heartbeats, WorkerBeat

logger = logging.getLogger("pulse.runtime.heartbeat")


class Heartbeat:
    def __init__(
        self,
        heartbeats: Heartbeats,
        name: str,
        channels: Sequence[str],
        busy: Callable[[], tuple[int, int]],
        interval_s: float = BEAT_INTERVAL_S,
    ) -> None:
        """``busy`` answers (deliveries in hand, results waiting to be settled)."""
        self._heartbeats = heartbeats
        self._name = name
        self._channels = list(channels)
        self._busy = busy
        self._interval_s = interval_s
        self._started_at_ms = now_ms()

    async def run(self) -> None:
        while True:
            try:
                await self._heartbeats.beat(self.describe())
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("could not write the heartbeat: %s", exc)
            await asyncio.sleep(self._interval_s)

    async def leave(self) -> None:
        try:
            await self._heartbeats.leave(self._name, now_ms())
        except TRANSIENT_REDIS_ERRORS as exc:  # it goes silent instead: as good, a little later
            logger.warning("could not remove the heartbeat: %s", exc)

    def describe(self) -> WorkerBeat:
        in_flight, settling = self._busy()
        return WorkerBeat(
            name=self._name,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at_ms=self._started_at_ms,
            seen_at_ms=now_ms(),
            channels=self._channels,
            in_flight=in_flight,
            settling=settling,
        )
