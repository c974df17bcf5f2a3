"""API-key revocations told to every API process over Redis pub/sub, confirmed by each.

Each API process caches resolved keys (pulse/store/key_cache.py) and follows one channel. A
revocation is published after its commit; every process that receives it empties its cache and
pushes a confirmation onto the list the message names; the revoking request waits for as many
confirmations as PUBLISH counted receivers, so once it is answered no process serves the key
from memory. A process trusts its cache only while its subscription is confirmed on the live
connection: a reconnect (even one redis-py makes by itself) or an error empties it, and until
the new SUBSCRIBE is confirmed every key is looked up in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from pulse.queue.client import open_pubsub
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys

logger = logging.getLogger("pulse.queue.revocations")
CONFIRM_TIMEOUT_S = 2.0  # a process this late is stuck; its cache still ages out (TTL)
RESUBSCRIBE_AFTER_S = 0.5
CONFIRMATION_TTL_S = 60  # a confirmation arriving after the revoker gave up is dropped by then


class Clearable(Protocol):
    """What the follower keeps truthful: a cache it can empty and whose ``live`` it sets."""

    live: Callable[[], bool]

    def clear(self) -> None: ...


class Revocations:
    def __init__(
        self, redis: Redis, subscriber: Redis, keys: QueueKeys,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S, channel: str = "key-revocations",
    ) -> None:  # fmt: skip
        self._redis = redis  # publishes and confirms
        self._subscriber = subscriber  # no socket timeout: its connection waits for messages
        self._channel = (
            f"{keys.home_tag}:{channel}"  # another channel: other caches (tenant limits)
        )
        self._confirm_timeout_s = confirm_timeout_s
        self._pubsub: PubSub | None = None
        self._connects = 0  # connections the subscription has had
        self._confirmed = -1  # the connection whose SUBSCRIBE was confirmed

    def live(self) -> bool:
        """True while revocations are sure to reach this process's cache."""
        connection = None if self._pubsub is None else self._pubsub.connection
        return (
            connection is not None and connection.is_connected and self._confirmed == self._connects
        )

    async def announce(self) -> int:
        """Tell every API process (this one included) that a key was revoked; return once each
        confirmed it emptied its cache, or after ``confirm_timeout_s`` (logged). Returns the
        number of confirmations."""
        reply = f"{self._channel}:confirm:{uuid.uuid4().hex}"
        receivers: int = await self._redis.publish(self._channel, reply)
        confirmed = await self._confirmations(reply, receivers)
        await self._redis.unlink(reply)
        if confirmed < receivers:
            logger.error(
                "key revocation confirmed by %d of %d API processes within %.1f s; the others"
                " forget cached keys within their TTL",
                confirmed, receivers, self._confirm_timeout_s,
            )  # fmt: skip
        return confirmed

    async def _confirmations(self, reply: str, receivers: int) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._confirm_timeout_s
        confirmed = 0
        while confirmed < receivers and (left := deadline - loop.time()) > 0:
            if await self._redis.blpop([reply], timeout=max(left, 0.01)) is None:
                break
            confirmed += 1
        return confirmed

    async def follow(self, cache: Clearable) -> None:
        """Keep ``cache`` truthful until cancelled: empty it on every revocation, and trust it
        only while the subscription is live (see ``live``)."""
        cache.live = self.live
        while True:
            try:
                await self._follow_once(cache)
            except TRANSIENT_REDIS_ERRORS as exc:
                logger.warning("key revocations unreachable (%s); keys looked up meanwhile", exc)
            except Exception:  # never leave the loop: the cache stays distrusted meanwhile
                logger.exception("key revocation subscription failed; keys looked up meanwhile")
            finally:
                self._pubsub = None
                cache.clear()
            await asyncio.sleep(RESUBSCRIBE_AFTER_S)

    async def _follow_once(self, cache: Clearable) -> None:
        async with await open_pubsub(self._subscriber) as pubsub:
            await pubsub.subscribe(self._channel)
            connection = pubsub.connection
            assert connection is not None
            self._connects += 1
            connection.register_connect_callback(self._reconnected)
            self._pubsub = pubsub
            try:
                await self._listen(pubsub, cache)
            finally:
                connection.deregister_connect_callback(self._reconnected)

    async def _listen(self, pubsub: PubSub, cache: Clearable) -> None:
        async for message in pubsub.listen():
            cache.clear()
            if message["type"] == "subscribe":
                self._confirmed = self._connects
            elif message["type"] == "message":
                await self._confirm(message["data"])

    async def _reconnected(self, connection: object) -> None:
        """redis-py reconnected the subscription by itself: distrust the cache until the
        SUBSCRIBE it sends again is confirmed (revocations in between were missed)."""
        del connection
        self._connects += 1

    async def _confirm(self, reply: bytes) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply, 1)
            pipe.expire(reply, CONFIRMATION_TTL_S)
            await pipe.execute()
