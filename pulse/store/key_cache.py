"""Each API process's memory of resolved API keys, so a request needs no PostgreSQL lookup.

Revocation stays immediate because the cache is trusted only while ``live()`` says so (the
process's revocation subscription is up and confirmed: pulse/queue/revocations.py) and every
revocation empties it. A lookup that started before an emptying cannot refill it with what it
read (the generation moved on). Entries are bounded in number (least recently used go first)
and in age (``ttl_s``), so even a revocation missed by a half-open connection ages out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


def _never() -> bool:
    return False


class KeyCache(Generic[Value]):
    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[float, Value]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self.generation = 0
        self.live: Callable[[], bool] = _never  # set by whoever keeps the cache truthful

    def get(self, digest: bytes) -> Value | None:
        """The value cached for ``digest``, if fresh and the cache is live."""
        if not self.live():
            return None
        found = self._entries.get(digest)
        if found is None:
            return None
        if self._clock() >= found[0]:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return found[1]

    def put(self, digest: bytes, value: Value, generation: int) -> None:
        """Remember ``value``, read when the cache was at ``generation``; nothing if it has been
        emptied since (the value may predate a revocation) or if it is not live."""
        if generation != self.generation or not self.live() or self._max_entries == 0:
            return
        self._entries[digest] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything, and whatever lookups in flight read before now."""
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)
