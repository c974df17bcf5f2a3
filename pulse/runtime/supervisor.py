"""Runs actors as tasks and restarts one that crashes, with a capped backoff.

An actor is an ``async`` callable that returns when asked to stop. A crash is logged and the
actor is started again, so one bad batch does not take the whole worker down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("pulse.runtime.supervisor")

ActorMain = Callable[[], Awaitable[None]]
RESTART_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, main: ActorMain) -> None:
        self._tasks[name] = asyncio.create_task(self._supervise(name, main), name=name)

    async def wait(self, name: str, timeout_s: float | None = None) -> bool:
        """Wait for one actor to return by itself; False when the timeout came first."""
        task = self._tasks[name]
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        return bool(done)

    async def cancel(self, *names: str) -> None:
        tasks = [self._tasks[name] for name in names if name in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel_all(self) -> None:
        await self.cancel(*self._tasks)

    @staticmethod
    async def _supervise(name: str, main: ActorMain) -> None:
        crashes = 0
        while True:
            try:
                await main()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = RESTART_DELAYS_S[min(crashes, len(RESTART_DELAYS_S) - 1)]
                crashes += 1
                logger.exception("actor %s crashed; restarting in %.1fs", name, delay)
                await asyncio.sleep(delay)
