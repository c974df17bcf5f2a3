"""Tenants' routes: which providers deliver a channel for them, in order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec


class RouteView(msgspec.Struct, kw_only=True):
    channel: str
    providers: list[str]
    updated_at: datetime


class RouteStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def all(self) -> dict[tuple[str, str], list[str]]:
        """Every tenant's routes, keyed by (tenant id, channel): what workers load."""
        rows = await self._pool.fetch("SELECT tenant_id::text, channel, providers FROM routes")
        return {(row[0], row[1]): list(row[2]) for row in rows}

    async def of_tenant(self, tenant_id: str) -> list[RouteView]:
        rows = await self._pool.fetch(
            "SELECT channel, providers, updated_at FROM routes WHERE tenant_id = $1"
            " ORDER BY channel",
            tenant_id,
        )
        return [RouteView(**dict(row)) for row in rows]

    async def put(self, tenant_id: str, channel: str, providers: Sequence[str]) -> RouteView:
        row = await self._pool.fetchrow(
            "INSERT INTO routes (tenant_id, channel, providers) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id, channel)"
            " DO UPDATE SET providers = excluded.providers, updated_at = now()"
            " RETURNING channel, providers, updated_at",
            tenant_id,
            channel,
            list(providers),
        )
        assert row is not None  # an upsert always returns its row
        return RouteView(**dict(row))

    async def delete(self, tenant_id: str, channel: str) -> bool:
        result: str = await self._pool.execute(
            "DELETE FROM routes WHERE tenant_id = $1 AND channel = $2", tenant_id, channel
        )
        return result.endswith(" 1")
