"""The ingress limiter: GCRA limits kept in Redis, checked all at once by ``gcra.lua``.

Several API processes share one limit because its state (a theoretical arrival time) lives in
Redis and every check-and-update is one script. The caller passes the time in: the API
processes' clocks, which on one host are one clock (across hosts NTP keeps them within
milliseconds, far below a limit's interval); tests drive the arithmetic with a clock of their
own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from pulse.core.limits import Rate
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script
from pulse.queue.ticks import TickBatcher


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to check: its policy name (``tenant``, ``key``), whose it is, and its rate."""

    name: str
    ident: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limit as the check left it: units it would still admit, ms until it is whole again."""

    limit: Limit
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    retry_after_ms: int  # 0 when admitted
    states: tuple[LimitState, ...]


class RateLimiter:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._keys = keys
        self._calls = TickBatcher(redis, load_script(redis, "gcra"))  # a tick's in one trip

    def key(self, limit: Limit) -> str:
        """The limit's state: named by its rate and burst too, so that a changed limit (an
        operator raising it, or turning it off and on) is in force at once from a fresh state
        instead of inheriting the old one's lock-out; the old state expires by itself."""
        rate = limit.rate
        return self._keys.rate_limit(limit.name, f"{limit.ident}:{rate.per_s!r}/{rate.burst}")

    async def admit(self, limits: Sequence[Limit], cost: int, now_ms: float) -> Admission:
        """Take ``cost`` units from every limit, or from none if any lacks them."""
        keys = [self.key(limit) for limit in limits]
        args: list[float | int] = [now_ms, cost]
        for limit in limits:
            args += [limit.rate.interval_ms, limit.rate.burst]
        answer = await self._calls.call(keys, args)
        admitted, retry_after_ms, *rest = (int(value) for value in answer)
        states = tuple(
            LimitState(limit, rest[2 * i], rest[2 * i + 1]) for i, limit in enumerate(limits)
        )
        return Admission(admitted == 1, retry_after_ms, states)
