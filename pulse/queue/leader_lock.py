"""A leader's lock: one holder at a time, kept alive by renewal, lost to expiry when the holder
stops renewing (killed, paused, cut off). The holder's identity is the lock's value, so only it
can renew or release it (``renew_lock.lua``, ``unlock.lua``).

The lock alone cannot stop a holder paused past its expiry from acting once it resumes: what a
leader does must also be fenced where it is committed (see ``pulse/store/cron_fence.py``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from pulse.queue.scripts import load_script


class LeaderLock:
    def __init__(self, redis: Redis, key: str, holder: str, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("lock ttl must be positive")
        self._redis = redis
        self._key = key
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = load_script(redis, "renew_lock")
        self._unlock = load_script(redis, "unlock")

    async def acquire(self) -> bool:
        return bool(await self._redis.set(self._key, self.holder, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the expiry by a whole ttl; False when the lock is no longer this holder's."""
        return bool(await self._renew(keys=[self._key], args=[self.holder, self.ttl_ms]))

    async def release(self) -> bool:
        return bool(await self._unlock(keys=[self._key], args=[self.holder]))

    async def holder_now(self) -> str | None:
        """Who holds the lock now (None when nobody does)."""
        value = await self._redis.get(self._key)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)
