"""Receipt endpoints: where a tenant's receipts go, and which generation of its secret signs
them. The receipts themselves are notifications on the internal ``receipt`` channel, created
by the delivery ledger in the statement that records the final status they report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from pulse.core.signatures import ROTATION_GRACE, SecretGeneration


class ReceiptEndpoint(msgspec.Struct, kw_only=True):
    url: str
    events: list[str]
    generation: int
    rotated_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def secret_generation(self) -> SecretGeneration:
        return SecretGeneration(self.generation, self.rotated_at)


_COLUMNS = "url, events, generation, rotated_at, created_at, updated_at"


class ReceiptStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str) -> ReceiptEndpoint | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM receipt_endpoints WHERE tenant_id = $1", tenant_id
        )
        return None if row is None else ReceiptEndpoint(**dict(row))

    async def put(self, tenant_id: str, url: str, events: Sequence[str]) -> ReceiptEndpoint:
        """Set the endpoint; its signing secret (generation) stays as it was."""
        row = await self._pool.fetchrow(
            "INSERT INTO receipt_endpoints (tenant_id, url, events) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant_id) DO UPDATE"
            " SET url = excluded.url, events = excluded.events, updated_at = now()"
            f" RETURNING {_COLUMNS}",
            tenant_id,
            url,
            list(events),
        )
        assert row is not None  # an upsert always returns its row
        return ReceiptEndpoint(**dict(row))

    async def delete(self, tenant_id: str) -> bool:
        result: str = await self._pool.execute(
            "DELETE FROM receipt_endpoints WHERE tenant_id = $1", tenant_id
        )
        return result.endswith(" 1")

    async def rotate(self, tenant_id: str) -> ReceiptEndpoint | None:
        """Move to the next signing secret; the previous one keeps signing for a grace period.
        None when there is no endpoint, or while an earlier rotation's overlap runs."""
        row = await self._pool.fetchrow(
            "UPDATE receipt_endpoints SET generation = generation + 1, rotated_at = now(),"
            " updated_at = now() WHERE tenant_id = $1"
            " AND (rotated_at IS NULL OR rotated_at <= now() - $2::interval)"
            f" RETURNING {_COLUMNS}",
            tenant_id,
            ROTATION_GRACE,
        )
        return None if row is None else ReceiptEndpoint(**dict(row))

    async def generations(self) -> dict[str, SecretGeneration]:
        """Every tenant's signing generation and when it last rotated: what workers load."""
        rows = await self._pool.fetch(
            "SELECT tenant_id::text, generation, rotated_at FROM receipt_endpoints"
        )
        return {row[0]: SecretGeneration(row[1], row[2]) for row in rows}
