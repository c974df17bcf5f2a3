"""``cpu_bound=True`` tasks run in worker processes, with the timeout and cancellation of any
task: a run that times out or is cancelled has its process killed (the only way to stop a
function mid-computation) and a fresh one started for the next run.

Each process serves one run at a time over a pipe: the task is named by module and qualified
name (the child imports it, so the function must live at a module's top level), the keyword
arguments and the result travel pickled. An exception raised in the child is raised again
here (with the child's traceback as a note), so ``retry_on`` and ``pulse.Retry`` work as for
any task; a process that dies mid-run (killed, out of memory) raises ``ProcessDied``, which is
retried like a worker's death. Processes are spawned, not forked: the worker's event loop,
threads and connections are not copied into them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import signal
import traceback
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

_CONTEXT = multiprocessing.get_context("spawn")
Request = tuple[str, str, dict[str, Any]]


class ProcessDied(Exception):
    """The process running a cpu-bound task ended before answering."""


def _resolve(module: str, name: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return getattr(target, "fn", target)  # the decorator leaves a pulse Task at that name


def _serve(conn: Connection, modules: tuple[str, ...]) -> None:  # pragma: no cover - child
    """The child's loop: one run per request, answered ('ok', value) or ('error', exc, trace).
    The task modules are imported first, so no run's timeout pays for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when its children stop
    for module in modules:
        importlib.import_module(module)
    conn.send(("ready",))
    while True:
        try:
            module, name, kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", _resolve(module, name)(**kwargs)))
        except Exception as exc:
            trace = traceback.format_exc()
            try:
                conn.send(("error", exc, trace))
            except Exception:  # the exception itself cannot be pickled
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), trace))


def _ready(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Process:
    def __init__(self, modules: tuple[str, ...]) -> None:
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=_serve, args=(child, modules), daemon=True)
        self.process.start()
        child.close()
        try:  # blocking: runs in a thread (ProcessPool._start)
            self.conn.recv()
        except EOFError:
            self.process.join(1)
            raise ProcessDied(f"could not start (exit code {self.process.exitcode})") from None

    async def call(self, request: Request) -> tuple[Any, ...]:
        self.conn.send(request)
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, _ready, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            answer: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1)
            raise ProcessDied(f"its process ended (exit code {self.process.exitcode})") from None
        return answer

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class ProcessPool:
    """At most ``size`` processes, started when the worker starts (``warm``) and replaced as
    soon as one is killed, so a run's timeout rarely pays for starting one."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._slots = asyncio.Semaphore(size)
        self._modules: tuple[str, ...] = ()
        self._idle: list[_Process] = []
        self._all: set[_Process] = set()
        self._starting: set[asyncio.Task[None]] = set()

    async def warm(self, modules: tuple[str, ...]) -> None:
        """Start every process, each importing ``modules`` (those of the cpu-bound tasks)."""
        self._modules = modules
        started = await asyncio.gather(*(self._start() for _ in range(self._size)))
        self._idle.extend(started)

    @property
    def idle(self) -> int:
        """Processes ready for a run now."""
        return len(self._idle)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One of the ``size`` turns: a caller runs in the pool only while it holds one, so
        waiting for a free process happens before a run's timeout starts."""
        async with self._slots:
            yield

    async def run(self, module: str, name: str, kwargs: dict[str, Any]) -> Any:
        """Run in a free process; the caller holds a ``turn``."""
        process = self._idle.pop() if self._idle else await self._start()
        try:
            answer = await process.call((module, name, kwargs))
        except BaseException:  # timed out, cancelled, or dead: killed, and replaced
            self._all.discard(process)
            process.kill()
            self._replace()
            raise
        self._idle.append(process)
        if answer[0] == "ok":
            return answer[1]
        _, exc, trace = answer
        exc.add_note(f"raised in the task's process:\n{trace}")
        raise exc

    def _replace(self) -> None:
        task = asyncio.ensure_future(self._spare())
        self._starting.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._starting.discard)

    async def _spare(self) -> None:
        process = await self._start()
        if len(self._idle) < self._size:
            self._idle.append(process)
        else:
            self._all.discard(process)
            process.kill()

    async def _start(self) -> _Process:
        process = await asyncio.to_thread(_Process, self._modules)  # slow: not on the loop
        self._all.add(process)
        return process

    def close(self) -> None:
        for task in self._starting:
            task.cancel()
        for process in self._all:
            with contextlib.suppress(Exception):
                process.kill()
        self._all.clear()
        self._idle.clear()
