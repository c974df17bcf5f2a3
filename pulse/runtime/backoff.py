"""The one capped backoff every actor uses while Redis or PostgreSQL is unreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
OUTAGE_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
logger = logging.getLogger("pulse.runtime.backoff")


def delay_for(failures: int, delays: Sequence[float] = OUTAGE_DELAYS_S) -> float:
    """The pause after ``failures`` consecutive failures (0-based), capped at the last step."""
    return delays[min(failures, len(delays) - 1)]


async def until_answered(
    call: Callable[[], Awaitable[T]], what: str, errors: tuple[type[BaseException], ...]
) -> T:
    """Repeat ``call`` through outages (``errors``) until it answers; the work in hand stays
    ours meanwhile (pending in Redis), so waiting loses nothing."""
    failures = 0
    while True:
        try:
            return await call()
        except errors as exc:
            delay = delay_for(failures)
            failures += 1
            logger.warning("could not %s (%s); retry in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
