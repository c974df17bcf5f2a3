"""Waiting for a task to end without polling: PostgreSQL LISTEN on ``pulse_job_done``.

The trigger of sql/013_tasks.sql notifies on commit when a task's row reaches an end. One
connection per API process listens; each waiter registers before re-reading the row, so an
end committed between the read and the wait is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pulse.store.pool import connect

CHANNEL = "pulse_job_done"


class JobEvents:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: asyncpg.Connection | None = None
        self._opening = asyncio.Lock()
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when ``job_id`` ends (registered before the caller re-reads)."""
        await self._listen()
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _listen(self) -> None:
        async with self._opening:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await connect(self._url)
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
            self._conn = conn

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        for event in self._waiters.get(str(payload), ()):
            event.set()

    def _lost(self, conn: object) -> None:
        """The connection dropped: wake every waiter (each re-reads), reconnect on next use."""
        self._conn = None
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()
