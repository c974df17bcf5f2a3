"""Recipients' windows in Redis (``recipient_cap.lua``): how many deliveries each recipient of
a tenant's channel had lately, shared by every worker."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from pulse.core.limits import cap_identity
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import load_script
from pulse.queue.ticks import TickBatcher


class RecipientWindows:
    def __init__(self, redis: Redis, keys: QueueKeys) -> None:
        self._keys = keys
        self._calls = TickBatcher(redis, load_script(redis, "recipient_cap"))

    async def take(
        self,
        tenant_id: str,
        channel: str,
        recipient: str,
        notification_id: str,
        cap: tuple[int, float],
        now_ms: float,
    ) -> int:
        """Count this notification against the recipient's cap (``(max, window ms)``): 0 when
        it may go, else the ms until the window allows it. One recipient written two ways
        (an email address in another letter case) shares its window."""
        identity = cap_identity(channel, recipient)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        key = self._keys.recipient_window(tenant_id, channel, digest)
        max_count, window_ms = cap
        wait = await self._calls.call([key], [now_ms, window_ms, max_count, notification_id])
        return int(wait)
