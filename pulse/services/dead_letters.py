"""Dead-letter operations shared by the HTTP API and the CLI: replay at a bounded rate, purge.

Replay commits first (status ``queued``, audit ``replayed`` and by whom), then enqueues fresh
entries; should Redis fail in between, the reconciler enqueues the committed jobs later.
"""

from __future__ import annotations

import asyncio

import msgspec

from pulse.core.models import Job
from pulse.metrics import Metrics
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.publisher import CHUNK, Publisher
from pulse.store.dead_letters import DeadLetterFilter, DeadLetterStore

DEFAULT_RATE = 100.0  # notifications per second


class DeadLetters:
    def __init__(
        self,
        store: DeadLetterStore,
        stream: DeadLetterStream,
        publisher: Publisher,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self._stream = stream
        self._publisher = publisher
        self._metrics = metrics  # None where nobody scrapes (the CLI)

    async def replay(
        self, where: DeadLetterFilter, by: str, *, limit: int, rate: float = DEFAULT_RATE
    ) -> int:
        """Replay up to ``limit`` dead letters, at most ``rate`` per second; return how many."""
        if rate <= 0 or limit < 0:
            raise ValueError("replay needs a positive rate and a non-negative limit")
        chunk = max(1, min(CHUNK, int(rate)))  # a step of the rate: one publish round trip
        # Only what is dead now: a replayed notification that dies again is not replayed again.
        where = msgspec.structs.replace(where, up_to_id=await self.store.newest_id())
        replayed = 0
        loop = asyncio.get_running_loop()
        while replayed < limit:
            started = loop.time()
            batch = await self.store.replay(where, min(chunk, limit - replayed), by)
            if not batch:
                break
            await self._publisher.publish([job for job, _ in batch])
            await self._stream.remove(
                {job.id for job, _ in batch}, {entry_id for _, entry_id in batch}
            )
            replayed += len(batch)
            self._count([job for job, _ in batch])
            await asyncio.sleep(max(0.0, len(batch) / rate - (loop.time() - started)))
        return replayed

    def _count(self, jobs: list[Job]) -> None:
        if self._metrics is not None:
            for job in jobs:
                self._metrics.replayed.labels(job.channel, str(job.priority)).inc()

    async def purge(self, where: DeadLetterFilter) -> int:
        purged = await self.store.purge(where)
        await self._stream.remove(set(purged.job_ids), set(purged.entry_ids))
        return len(purged.entry_ids)
