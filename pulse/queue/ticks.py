"""Script calls of one event-loop tick sent together: one pipeline, one round trip.

Under load the requests in flight share a round trip instead of queueing for one each (as the
publisher does for its appends). Each call runs by EVALSHA alone; should Redis have lost the
script, it is loaded and exactly the calls refused run again. Each caller gets its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from pulse.queue.scripts import queue_evalsha, resend_refused

CHUNK = 500  # calls per round trip
Call = tuple[Sequence[str], Sequence[Any]]  # KEYS, ARGV
Waiting = tuple[Call, "asyncio.Future[Any]"]


class TickBatcher:
    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._waiting: list[Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def call(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's answer for these KEYS and ARGV (its error raised here)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:  # the first of this tick sends them all
            loop.call_soon(self._flush_waiting)
        self._waiting.append(((keys, args), future))
        return await future

    def _flush_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[Waiting]) -> None:
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            try:
                results = await self._run([call for call, _ in chunk])
            except asyncio.CancelledError:
                for _, future in batch[start:]:
                    future.cancel()
                raise
            except Exception as exc:  # the round trip failed: each call of the chunk with it
                results = [exc] * len(chunk)
            for (_, future), result in zip(chunk, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _run(self, calls: list[Call]) -> list[Any]:
        return await resend_refused(calls, await self._evalsha(calls), self._evalsha, self._reload)

    async def _reload(self, refused: Sequence[Call]) -> None:
        """Redis restarted or its scripts were flushed: nothing ran for ``refused``."""
        del refused
        await self._redis.script_load(self._script.script)

    async def _evalsha(self, calls: Sequence[Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                queue_evalsha(pipe, self._script.sha, keys, args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
