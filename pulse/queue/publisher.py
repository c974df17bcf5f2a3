"""Appends accepted jobs to the stream of their priority (``lua/enqueue.lua``).

The appends of every ``publish`` made in the same event-loop tick go to Redis together, as one
pipeline (at most ``CHUNK`` each), and each caller is answered for its own jobs only: under
load, the requests in flight share a round trip instead of queueing for one each. The script
runs by EVALSHA alone (no SCRIPT EXISTS first, as a redis-py pipeline would send on every
execute); should Redis have lost it, it is loaded and exactly the appends refused run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pulse.core.models import Job, JobKind
from pulse.queue.codec import MESSAGE_FIELD, encode_job
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import Call, load_script, queue_evalsha, resend_refused
from pulse.queue.tenant_streams import TenantStreams

CHUNK = 500  # jobs per round trip: large enough to amortise it, small enough not to stall Redis
Waiting = tuple[Job, bytes, "asyncio.Future[bytes]"]


class Appends:
    """The script call that appends an accepted job: the publisher's, and that of each
    receipt a settled batch streams (``transitions``)."""

    def __init__(self, redis: Redis, keys: QueueKeys, *, fair: bool) -> None:
        """``fair``: notifications go to their tenant's sub-stream of their priority
        (``tenant_streams.py``, PULSE_TENANT_FAIRNESS); tasks keep their own streams."""
        self._redis = redis
        self._keys = keys
        self._enqueue = load_script(redis, "enqueue")
        self._tenant_streams = TenantStreams(redis, keys) if fair else None

    def call(self, job: Job, message: bytes | None = None) -> Call:
        """The call that appends ``job`` to its partition (``QueueKeys.of_job``): to its
        tenant's sub-stream there when fair."""
        if message is None:
            message = encode_job(job)[MESSAGE_FIELD]
        if self._tenant_streams is not None and job.kind is not JobKind.TASK:
            return self._tenant_streams.append_call(job, message)
        keys = self._keys.of_job(job)
        return Call(self._enqueue, [keys.stream_of(job), keys.index()], [job.id, message])

    async def load(self) -> None:
        """Load the scripts again (Redis restarted or flushed them)."""
        await self._redis.script_load(self._enqueue.script)
        if self._tenant_streams is not None:
            await self._tenant_streams.load()


class Publisher:
    def __init__(self, redis: Redis, keys: QueueKeys, *, fair: bool = False) -> None:
        """``fair``: as ``Appends``."""
        self._redis = redis
        self._appends = Appends(redis, keys, fair=fair)
        self._waiting: list[Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def publish(self, jobs: Sequence[Job]) -> list[bytes]:
        """XADD and index each job, sharing round trips with the other publishes of this tick;
        return the entry ids. Should an append fail, its error is raised once every job of
        this call is settled (others of the call may have been streamed)."""
        results = await self.publish_each(jobs)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, bytes)]

    async def publish_each(self, jobs: Sequence[Job]) -> list[bytes | BaseException]:
        """``publish``, answering each job's entry id or error instead of raising."""
        loop = asyncio.get_running_loop()
        messages = [encode_job(job)[MESSAGE_FIELD] for job in jobs]
        futures: list[asyncio.Future[bytes]] = [loop.create_future() for _ in jobs]
        if futures and not self._waiting:  # the first of this tick sends them all
            loop.call_soon(self._flush_waiting)
        self._waiting.extend(zip(jobs, messages, futures, strict=True))
        return await asyncio.gather(*futures, return_exceptions=True)

    async def stage(self, pipe: Pipeline, jobs: Sequence[Job]) -> None:
        """Queue the enqueue of ``jobs`` on a pipeline another transition executes."""
        for job in jobs:
            call = self._appends.call(job)
            await call.script(keys=call.keys, args=call.args, client=pipe)

    def _flush_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[Waiting]) -> None:
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            try:
                results = await self._append(chunk)
            except asyncio.CancelledError:  # shutting down: nobody will be answered
                for _, _, future in batch[start:]:
                    future.cancel()
                raise
            except Exception as exc:  # the round trip failed: each job of the chunk with it
                results = [exc] * len(chunk)
            _settle(chunk, results)

    async def _append(self, chunk: list[Waiting]) -> list[Any]:
        return await resend_refused(chunk, await self._evalsha(chunk), self._evalsha, self._reload)

    async def _reload(self, refused: Sequence[Waiting]) -> None:
        """Redis restarted or its scripts were flushed: nothing ran for ``refused``."""
        del refused
        await self._appends.load()

    async def _evalsha(self, chunk: Sequence[Waiting]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job, message, _ in chunk:
                call = self._appends.call(job, message)
                queue_evalsha(pipe, call.script.sha, call.keys, call.args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


def _settle(chunk: list[Waiting], results: list[Any]) -> None:
    """Answer each waiting publish its own result; one that gave up (cancelled) is skipped."""
    for (_, _, future), result in zip(chunk, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
