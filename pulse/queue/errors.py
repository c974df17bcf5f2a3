"""Which Redis errors mean "Redis is unreachable right now" rather than a bug."""

from __future__ import annotations

from redis.exceptions import BusyLoadingError, ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    # Redis Cluster mid-failover: a master gone, its slots not yet served by the replica.
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
