"""Reads new entries from the priority streams by weighted round robin and dispatches them.

Each round asks every stream for its share (``pulse.core.priority``) in one pipelined round trip;
only when every stream is empty does it block on all of them for new work.

No timer is on the path from an append to its claim: the blocking read returns the moment an
entry arrives (``worker_block_ms`` only bounds how long an idle fetcher takes to see a stop),
and a busy fetcher's next round takes what arrived during the previous one's claim, up to
``worker_batch_size``: the claims batch themselves as the load makes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from redis.exceptions import ResponseError

from pulse.core.priority import DeficitRoundRobin
from pulse.queue.consumer import Consumer, Entry
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.runtime.backoff import delay_for
from pulse.runtime.dispatcher import Dispatcher

logger = logging.getLogger("pulse.runtime.fetcher")


class Fetcher:
    def __init__(
        self,
        consumer: Consumer,
        dispatcher: Dispatcher,
        scheduler: DeficitRoundRobin,
        *,
        batch_size: int,
        block_ms: int,
    ) -> None:
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._scheduler = scheduler
        self._streams = consumer.streams
        self._level = {stream: level for level, stream in enumerate(self._streams)}
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._stopping = asyncio.Event()

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    def stop(self) -> None:
        """Finish the read in progress, dispatch it, then return from ``run``."""
        self._stopping.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set() and not self._consumer.gone:
            await self._dispatcher.wait_for_room()
            try:
                entries = await self._fetch()
                failures = 0
            except ResponseError as exc:
                if not await self._recovered(exc):
                    raise
                continue
            except TRANSIENT_REDIS_ERRORS as exc:
                delay = delay_for(failures)
                failures += 1
                logger.warning("could not read from Redis (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if entries:
                await self._dispatcher.dispatch(entries)
            await self._after_round()

    async def _fetch(self) -> list[Entry]:
        """One round; a blocking wait only when every stream is empty."""
        entries = await self._read_round()
        if not entries:
            entries = await self._wait()
        return entries

    async def _wait(self) -> list[Entry]:
        return await self._consumer.wait(self._batch_size, self._block_ms)

    async def _recovered(self, exc: ResponseError) -> bool:
        """Whether a refusal from Redis was handled (the round is then simply skipped)."""
        del exc
        return False

    async def _after_round(self) -> None:
        """What a subclass does once a round's entries are dispatched."""

    async def _read_round(self) -> list[Entry]:
        asked = self._scheduler.plan()
        entries = await self._consumer.read(dict(zip(self._streams, asked, strict=True)))
        got = Counter(self._level[entry.stream] for entry in entries)
        self._scheduler.served(asked, got)
        return entries
