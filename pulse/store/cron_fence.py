"""The cron leader's fencing token, kept in PostgreSQL where the firing commits.

A leader takes a new token when it takes over (one increment per take-over). Each occurrence's
notification commits in a transaction that first locks the deployment's fence row and finds
its own token there; an old leader that kept running after its lock expired finds a newer
token and commits nothing. The take-over's increment waits for a fire in progress, so a fire
either committed before the successor began or never commits.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

import asyncpg

from pulse.store.idempotency import Remembered
from pulse.store.notifications import NewNotification, NotificationStore
from pulse.store.tenants import Connection

_TAKE_OVER = """
INSERT INTO cron_fences (deployment, token, holder) VALUES ($1, 1, $2)
ON CONFLICT (deployment) DO UPDATE
   SET token = cron_fences.token + 1, holder = excluded.holder, since = now()
RETURNING token
"""


class Deposed(Exception):
    """This leader's fencing token is no longer the deployment's: it must not fire."""


@dataclass(frozen=True, slots=True)
class Fence:
    deployment: str
    token: int


class CronFences:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def take_over(self, deployment: str, holder: str) -> Fence:
        """A new token for a leader that has just taken the lock."""
        token: int = await self._pool.fetchval(_TAKE_OVER, deployment, holder)
        return Fence(deployment, token)


async def check(conn: Connection, fence: Fence) -> None:
    """In the caller's transaction: hold the fence row (shared) and require ``fence``."""
    current = await conn.fetchval(
        "SELECT token FROM cron_fences WHERE deployment = $1 FOR SHARE", fence.deployment
    )
    if current != fence.token:
        raise Deposed(f"cron fence is {current}, this leader holds {fence.token}")


# The fence the running task fires under (set by the cron leader around each fire).
current_fence: ContextVar[Fence | None] = ContextVar("current_fence", default=None)


class FencedNotifications(NotificationStore):
    """Notifications the cron leader creates: the keyed insert (the only one a schedule uses)
    checks ``current_fence`` first, in the same transaction."""

    @staticmethod
    async def insert_keyed(conn: Connection, new: NewNotification, answer: Remembered) -> bool:
        fence = current_fence.get()
        if fence is None:
            raise Deposed("no cron fence held")
        await check(conn, fence)
        return await NotificationStore.insert_keyed(conn, new, answer)
