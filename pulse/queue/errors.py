"""Which Redis errors mean "Redis is unreachable right now" rather than a bug."""

from __future__ import annotations

from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
)
