"""Runs actors as tasks and restarts one that crashes, with a capped backoff.

An actor is an ``async`` callable that returns when asked to stop. A crash is logged and the
actor is started again, so one bad batch does not take the whole worker down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pulse.runtime.backoff import delay_for

logger = logging.getLogger("pulse.runtime.supervisor")

ActorMain = Callable[[], Awaitable[None]]
RESTART_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
CANCEL_TIMEOUT_S = 5.0
RECANCEL_S = 0.1


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

    async def cancel(self, *names: str, timeout_s: float = CANCEL_TIMEOUT_S) -> None:
        """Cancel actors and wait for them, but not for ever.

        A library may swallow a cancellation (turn it into a connection error that an actor
        then retries), so the cancel is repeated until the task ends. One still running after
        ``timeout_s`` is reported with where it waits and left behind, so shutdown still ends.
        """
        pending = {self._tasks[name] for name in names if name in self._tasks}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and loop.time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            where = " <- ".join(_await_chain(task.get_coro()))
            logger.error("actor %s ignored cancellation: %s", task.get_name(), where)

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
                delay = delay_for(crashes, RESTART_DELAYS_S)
                crashes += 1
                logger.exception("actor %s crashed; restarting in %.1fs", name, delay)
                await asyncio.sleep(delay)


def _await_chain(coro: object) -> list[str]:
    """Where a suspended coroutine waits, outermost first: for the stuck-actor report."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain
