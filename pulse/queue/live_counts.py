"""The partition counts of the processes running now, so no partition is removed under one.

Every process that appends to or reads partitions (API processes and workers) registers its
own ``PULSE_REDIS_PARTITIONS`` every ``REFRESH_S`` (``live_partitions.lua``); a worker removes
a retiring partition only when no process seen within ``WINDOW_MS`` counts above it. So during
a rolling restart a worker on fewer partitions leaves a worker (or API) on more alone, and
removes the partitions once the last such process has stopped: it leaves the set when it stops
cleanly, or drops out of the window when it died.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable

from redis.asyncio import Redis

from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script

REFRESH_S = 5.0  # how often a process says it is alive (a worker: at least this often)
WINDOW_MS = 15_000  # three refreshes missed: the process stopped
logger = logging.getLogger("pulse.queue.live_counts")


def member_of(partitions: int) -> str:
    """``<count>:<host>:<pid>:<random>``: readable to an operator, one per process and count,
    so the registration at start (``partitions.served_keys``) is the one its loop refreshes."""
    return f"{partitions}:{_process()}"


@functools.cache
def _process() -> str:
    """This process, drawn once (on first use, not at import): host and pid alone may repeat
    across containers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LiveCounts:
    def __init__(
        self, redis: Redis, keys: QueueKeys, clock: Callable[[], int] | None = None
    ) -> None:
        """``clock``: ms since the epoch, for tests; by default Redis's own clock, so no
        host's clock (a worker's ahead of an API's) decides who is alive."""
        self._redis = redis
        self._keys = [keys.partition_counts(), keys.partition_count()]
        self._member = member_of(keys.partitions)
        self._partitions = keys.partitions
        self._clock = clock
        self._live = load_script(redis, "live_partitions")

    async def refresh(self) -> int:
        """Say this process is alive and raise the remembered count to its own; the highest
        partition count alive (its own included)."""
        now = "" if self._clock is None else self._clock()
        args = [self._member, now, WINDOW_MS, self._partitions]
        return int(await self._live(keys=self._keys, args=args))

    async def leave(self) -> None:
        """Stop counting this process (a clean stop): nothing waits out the window."""
        try:
            await self._redis.zrem(self._keys[0], self._member)
        except TRANSIENT_REDIS_ERRORS as exc:  # it drops out of the window instead
            logger.warning("could not remove this process's partition count: %s", exc)

    async def run(self, interval_s: float = REFRESH_S) -> None:
        """The API's loop: refresh every ``interval_s``, Redis being down or not."""
        while True:
            try:
                await self.refresh()
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("partition count not refreshed: %s", exc)
            await asyncio.sleep(interval_s)
