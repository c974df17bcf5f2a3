"""The threads of one plain-``def`` task: its own bounded executor, so a task that hangs uses
up its own threads only, never those of other tasks (or asyncio's default executor).

A run takes a thread before it starts (its timeout counts from its start, not from its wait)
and gives it back when the thread ends. A run that timed out or was cancelled cannot stop its
thread: the thread keeps its place until the function returns, so a task never has more than
``size`` threads (``concurrency``), and a task whose every thread hangs waits, alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any


class Turn:
    """A thread taken for one run; given back by the thread's end, or unused at the turn's
    end."""

    def __init__(self) -> None:
        self.used = False


class TaskThreads:
    def __init__(self, name: str, size: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix=f"pulse-task-{name}")
        self._free = asyncio.Semaphore(size)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """Wait for a thread that is really free (not held by a hung run)."""
        await self._free.acquire()
        turn = Turn()
        try:
            yield turn
        finally:
            if not turn.used:
                self._free.release()

    async def run(self, turn: Turn, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in the turn's thread, with the caller's context (the job's log fields)."""
        loop, context = asyncio.get_running_loop(), contextvars.copy_context()
        turn.used = True
        future = self._executor.submit(context.run, functools.partial(fn, *args, **kwargs))

        def ended(_: Future[Any]) -> None:  # ran, or cancelled before it ran
            loop.call_soon_threadsafe(self._free.release)

        future.add_done_callback(ended)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
