"""A task lane's mailbox: by priority first, then round-robin across tenants within a priority,
so one tenant's backlog does not hold back another tenant's job of the same priority.

Within a tenant, arrival order is kept. The worker's fetch still reads the stream in order:
what this evens out is what the mailbox holds (``PULSE_WORKER_MAILBOX_SIZE`` per task).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairMailbox(Generic[T]):
    def __init__(self) -> None:
        self._levels: dict[int, OrderedDict[str, deque[T]]] = {}
        self._items = asyncio.Semaphore(0)
        self._size = 0
        self._unfinished = 0
        self._finished = asyncio.Event()
        self._finished.set()

    def qsize(self) -> int:
        return self._size

    def put_nowait(self, priority: int, tenant: str, item: T) -> None:
        level = self._levels.setdefault(priority, OrderedDict())
        level.setdefault(tenant, deque()).append(item)
        self._size += 1
        self._unfinished += 1
        self._finished.clear()
        self._items.release()

    async def get(self) -> T:
        """The next item of the most urgent priority, the tenants of that priority in turn."""
        await self._items.acquire()
        priority = min(self._levels)
        level = self._levels[priority]
        tenant, queue = next(iter(level.items()))
        item = queue.popleft()
        if queue:
            level.move_to_end(tenant)  # the next item of this priority is another tenant's
        else:
            del level[tenant]
            if not level:
                del self._levels[priority]
        self._size -= 1
        return item

    def task_done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._finished.set()

    async def join(self) -> None:
        await self._finished.wait()
