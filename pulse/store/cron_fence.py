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
from pulse.store.schedules import Advance, advance_on
from pulse.store.tenants import Connection

_TAKE_OVER = """
INSERT INTO cron_fences (deployment, token, holder) VALUES ($1, 1, $2)
ON CONFLICT (deployment) DO UPDATE
   SET token = cron_fences.token + 1, holder = excluded.holder, since = now()
RETURNING token
"""


class NotFired(Exception):
    """An occurrence's commit was refused; nothing was written."""


class Deposed(NotFired):
    """This leader's fencing token is no longer the deployment's: it must not fire."""


class Overtaken(NotFired):
    """The schedule changed since the fire was planned (edited, paused, or its cursor moved
    past the occurrence): the plan is made again from the row."""


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


@dataclass(frozen=True, slots=True)
class Firing:
    """An occurrence being fired: under which fence, and the cursor's move that records it."""

    fence: Fence
    advance: Advance


# What the running task fires (set by the cron leader around each fire).
current_firing: ContextVar[Firing | None] = ContextVar("current_firing", default=None)


class FencedNotifications(NotificationStore):
    """Notifications the cron leader creates. The keyed insert (the only one a schedule uses)
    first checks the fence and moves the schedule's cursor past the occurrence, in the same
    transaction: the notification exists exactly when the cursor says it was fired, so a
    schedule changed, paused or already past that occurrence creates nothing."""

    @staticmethod
    async def insert_keyed(conn: Connection, new: NewNotification, answer: Remembered) -> bool:
        firing = current_firing.get()
        if firing is None:
            raise Deposed("no cron fence held")
        fence = firing.fence
        await check(conn, fence)
        if not await advance_on(conn, firing.advance, fence.deployment, fence.token):
            raise Overtaken(f"schedule {firing.advance.schedule_id} changed; fire planned again")
        return await NotificationStore.insert_keyed(conn, new, answer)
