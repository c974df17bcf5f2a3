"""Tenants' weights in the fair share between tenants of one priority (``tenants.weight``)."""

from __future__ import annotations

import asyncpg

MAX_WEIGHT = 1000


class TenantWeights:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str) -> int | None:
        """The tenant's weight; None when there is no such tenant."""
        weight: int | None = await self._pool.fetchval(
            "SELECT weight FROM tenants WHERE id = $1", tenant_id
        )
        return weight

    async def put(self, tenant_id: str, weight: int) -> bool:
        """Set the tenant's weight; False when there is no such tenant."""
        done: str = await self._pool.execute(
            "UPDATE tenants SET weight = $2 WHERE id = $1", tenant_id, weight
        )
        return done != "UPDATE 0"

    async def differing(self) -> dict[str, int]:
        """Tenant id -> weight, for the tenants whose weight is not the default (1): what a
        worker needs, few rows however many tenants there are."""
        rows = await self._pool.fetch("SELECT id, weight FROM tenants WHERE weight <> 1")
        return {str(row["id"]): row["weight"] for row in rows}
