"""Opening the Redis client, in one place so every process configures it the same way."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

REQUEST_TIMEOUT_S = 5.0
# A command whose connection turns out closed (Redis restarted while it sat in the pool) runs
# again on a fresh one, at most this often, after a short pause.
RECONNECT_RETRIES = 2
RECONNECT_BACKOFF = (0.05, 0.5)  # seconds: first pause, longest pause


def open_redis(url: str, *, blocking_reads: bool = False) -> Redis:
    """A client for ``url``. An API request waits at most ``REQUEST_TIMEOUT_S`` for Redis (then
    answers 503 and the client retries). A worker's client has no socket timeout, because its
    fetcher blocks in XREADGROUP for as long as the streams are empty; each of its actors
    retries through outages on its own.

    A pooled connection the server closed (a restart) fails its next command with
    ``ConnectionError``; that command is retried on a new connection, so the first request
    after a restart is served, not answered 503. Only connection errors are retried, never a
    timeout (a request would wait several ``REQUEST_TIMEOUT_S``). A retried enqueue whose
    reply was lost may leave a second stream entry of the job: the worker's claim answers it
    as held or finished (the notification's row is the record), so it is never sent twice.
    """
    timeout = None if blocking_reads else REQUEST_TIMEOUT_S
    first, longest = RECONNECT_BACKOFF
    retry = Retry(
        ExponentialBackoff(cap=longest, base=first),
        RECONNECT_RETRIES,
        supported_errors=(RedisConnectionError,),
    )
    redis: Redis = Redis.from_url(url, socket_timeout=timeout, retry=retry)
    return redis
