"""A Redis lock with an expiry: one holder at a time, and a dead holder blocks only until then."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from pulse.queue.scripts import load_script


class ExpiringLock:
    def __init__(self, redis: Redis, key: str, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("lock ttl must be positive")
        self._redis = redis
        self._key = key
        self._ttl_ms = ttl_ms
        self._token = secrets.token_hex(16)
        self._unlock = load_script(redis, "unlock")

    async def acquire(self) -> bool:
        return bool(await self._redis.set(self._key, self._token, nx=True, px=self._ttl_ms))

    async def release(self) -> bool:
        return bool(await self._unlock(keys=[self._key], args=[self._token]))
