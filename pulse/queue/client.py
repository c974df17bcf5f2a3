"""Opening the Redis client, in one place so every process configures it the same way."""

from __future__ import annotations

from redis.asyncio import Redis

REQUEST_TIMEOUT_S = 5.0


def open_redis(url: str, *, blocking_reads: bool = False) -> Redis:
    """A client for ``url``. An API request waits at most ``REQUEST_TIMEOUT_S`` for Redis (then
    answers 503 and the client retries). A worker's client has no socket timeout, because its
    fetcher blocks in XREADGROUP for as long as the streams are empty; each of its actors
    retries through outages on its own."""
    timeout = None if blocking_reads else REQUEST_TIMEOUT_S
    redis: Redis = Redis.from_url(url, socket_timeout=timeout)
    return redis
