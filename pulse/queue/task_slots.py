"""Fleet-wide concurrency of a task: slots in Redis held under a lease (``lua/task_slot.lua``).

A run takes a slot before it starts and renews it while it runs; a holder that dies stops
renewing, and its slot comes back when the lease ends. Waiting for a slot polls with a short
jittered sleep: slots free up when runs end, which no event announces across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script

logger = logging.getLogger("pulse.queue.task_slots")
POLL_S = (0.02, 0.2)  # wait between tries for a slot: from, to (jittered, doubling)


class TaskSlots:
    def __init__(self, redis: Redis, keys: QueueKeys, lease_ms: int) -> None:
        self._keys = keys
        self._script = load_script(redis, "task_slot")
        self._lease_ms = lease_ms

    async def _call(self, task: str, op: str, token: str, limit: int = 0) -> bool:
        keys = [self._keys.task_slots(task)]
        answer = await self._script(keys=keys, args=[op, token, self._lease_ms, limit])
        return bool(answer)

    async def acquire(self, task: str, token: str, limit: int) -> bool:
        return await self._call(task, "acquire", token, limit)

    async def renew(self, task: str, token: str) -> bool:
        return await self._call(task, "renew", token)

    async def release(self, task: str, token: str) -> None:
        await self._call(task, "release", token)

    async def wait(self, task: str, limit: int) -> str:
        """Wait for one of the ``limit`` slots of ``task``; return the holder's token."""
        token = uuid.uuid4().hex
        wait = POLL_S[0]
        while not await self.acquire(task, token, limit):
            await asyncio.sleep(random.uniform(wait / 2, wait))
            wait = min(wait * 2, POLL_S[1])
        return token

    @contextlib.asynccontextmanager
    async def held(self, task: str, token: str) -> AsyncIterator[None]:
        """Renew the slot every third of its lease for the block, give it back after."""
        renewing = asyncio.create_task(self._renew(task, token))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):  # else its lease ends it
                await self.release(task, token)

    async def _renew(self, task: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                if not await self.renew(task, token):
                    logger.warning("the %s slot's lease ran out before its run ended", task)
                    return
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("could not renew the %s slot: %s", task, exc)
