"""Tenants' recipient caps (``recipient_caps``): per channel, at most N per recipient per
window. Read by workers (each tenant's caps cached a few seconds) and set by tenants' admins."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from pulse.core.limits import RecipientCap


class RecipientCapStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def of(self, tenant_id: str) -> dict[str, tuple[RecipientCap, datetime]]:
        """The tenant's caps by channel, with when each was set."""
        rows = await self._pool.fetch(
            "SELECT channel, max_count, window_s, over, updated_at FROM recipient_caps"
            " WHERE tenant_id = $1 ORDER BY channel",
            tenant_id,
        )
        return {row[0]: (RecipientCap(row[1], row[2], row[3]), row[4]) for row in rows}

    async def put(self, tenant_id: str, channel: str, cap: RecipientCap) -> datetime:
        updated: datetime = await self._pool.fetchval(
            "INSERT INTO recipient_caps (tenant_id, channel, max_count, window_s, over)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, channel) DO UPDATE"
            " SET (max_count, window_s, over, updated_at) = ($3, $4, $5, now())"
            " RETURNING updated_at",
            tenant_id, channel, cap.max_count, cap.window_s, cap.over,
        )  # fmt: skip
        return updated

    async def delete(self, tenant_id: str, channel: str) -> bool:
        result: str = await self._pool.execute(
            "DELETE FROM recipient_caps WHERE tenant_id = $1 AND channel = $2", tenant_id, channel
        )
        return result.endswith(" 1")
