"""Streams the tasks released by their parents' end (sql/014_task_flows.sql).

The release itself (``waiting`` -> ``queued``) is committed with the parent's end, exactly
once; this actor only makes it prompt: it LISTENs on ``pulse_job_released`` and streams each
released job with ``enqueue_once.lua``, so the workers that all hear it append it once. A
release heard by nobody (no worker listening, or one SIGKILLed before streaming) is a queued
row the reconciler streams after ``PULSE_RECONCILER_OLDER_THAN_S``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.releases import Releases
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.pool import connect
from pulse.store.rows import JOB_COLUMNS, job_from_row

logger = logging.getLogger("pulse.runtime.releaser")
_LISTEN_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError)
CHANNEL = "pulse_job_released"
_QUEUED = f"SELECT {JOB_COLUMNS} FROM notifications WHERE id = $1 AND status = 'queued'"


class Releaser:
    def __init__(self, database_url: str, pool: asyncpg.Pool, releases: Releases) -> None:
        self._url = database_url
        self._pool = pool
        self._releases = releases
        self._heard: asyncio.Queue[str] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except _LISTEN_ERRORS as exc:
                logger.warning("not hearing releases (%s); the reconciler streams them", exc)
            await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        conn = await connect(self._url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._notified)
            streaming = asyncio.create_task(self._stream_heard())
            try:
                await lost.wait()
            finally:
                streaming.cancel()
        finally:
            if not conn.is_closed():
                await conn.close()

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._heard.put_nowait(str(payload))

    async def _stream_heard(self) -> None:
        while True:
            job_id = await self._heard.get()
            try:
                row = await self._pool.fetchrow(_QUEUED, job_id)
                if row is not None:
                    await self._releases.stream(job_from_row(row))
            except (*TRANSIENT_DB_ERRORS, *TRANSIENT_REDIS_ERRORS) as exc:
                logger.warning(
                    "could not stream released %s (%s): the reconciler will", job_id, exc
                )
