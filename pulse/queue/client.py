"""Opening the Redis client, in one place so every process configures it the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from pulse.config import Settings

REQUEST_TIMEOUT_S = 5.0
# A command whose connection turns out closed (Redis restarted while it sat in the pool) runs
# again on a fresh one, at most this often, after a short pause.
RECONNECT_RETRIES = 2
RECONNECT_BACKOFF = (0.05, 0.5)  # seconds: first pause, longest pause
# A cluster client retries a command through a failover (its node gone, the slot not yet
# served by the promoted replica) this often, refreshing the topology in between.
CLUSTER_RETRIES = 8
CLUSTER_BACKOFF = (0.1, 1.0)


def open_redis(url: str, *, blocking_reads: bool = False, cluster: bool = False) -> Redis:
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

    With ``cluster`` (``PULSE_REDIS_CLUSTER``), ``url`` names one node of a Redis Cluster and
    the client routes every command (and every script, by its keys' one slot) to the master
    serving it. It is answered as a ``Redis``: it takes the same commands, pipelines (one per
    node underneath) and scripts; pub/sub goes to one node (``open_pubsub``).
    """
    timeout = None if blocking_reads else REQUEST_TIMEOUT_S
    if cluster:
        return _open_cluster(url, timeout)
    first, longest = RECONNECT_BACKOFF
    retry = Retry(
        ExponentialBackoff(cap=longest, base=first),
        RECONNECT_RETRIES,
        supported_errors=(RedisConnectionError,),
    )
    redis: Redis = Redis.from_url(url, socket_timeout=timeout, retry=retry)
    return redis


def open_configured(settings: Settings, *, blocking_reads: bool = False) -> Redis:
    """``open_redis`` for the deployment's Redis (a cluster with ``PULSE_REDIS_CLUSTER``)."""
    url = settings.require_redis_url()
    return open_redis(url, blocking_reads=blocking_reads, cluster=settings.redis_cluster)


def _open_cluster(url: str, timeout: float | None) -> Redis:
    first, longest = CLUSTER_BACKOFF
    retry = Retry(ExponentialBackoff(cap=longest, base=first), CLUSTER_RETRIES)
    client = RedisCluster.from_url(url, socket_timeout=timeout, retry=retry)
    return cast(Redis, client)


async def open_pubsub(redis: Redis) -> PubSub:
    """A pub/sub connection of ``redis``. On a cluster, classic pub/sub reaches every node, so
    the one node it connects to hears every publish; the client must know the nodes first."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    return redis.pubsub()
