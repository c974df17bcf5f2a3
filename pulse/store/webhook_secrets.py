"""Which generation of its derived webhook signing secret each tenant is at (the secrets
themselves are derived, never stored: ``pulse.core.signatures``)."""

from __future__ import annotations

import asyncpg

from pulse.core.signatures import ROTATION_GRACE, SecretGeneration


class WebhookSecretStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str) -> SecretGeneration:
        """A tenant that never rotated is at generation 1 (and has no row)."""
        row = await self._pool.fetchrow(
            "SELECT generation, rotated_at FROM webhook_secrets WHERE tenant_id = $1", tenant_id
        )
        return SecretGeneration() if row is None else SecretGeneration(row[0], row[1])

    async def rotate(self, tenant_id: str) -> SecretGeneration | None:
        """Move to the next secret; the previous one keeps signing for the grace period. None
        while an earlier rotation's overlap runs: rotating again would drop the secret that
        receivers may still use before the overlap promised them is over."""
        row = await self._pool.fetchrow(
            "INSERT INTO webhook_secrets (tenant_id, generation, rotated_at) VALUES ($1, 2, now())"
            " ON CONFLICT (tenant_id) DO UPDATE SET generation = webhook_secrets.generation + 1,"
            " rotated_at = now(), updated_at = now()"
            " WHERE webhook_secrets.rotated_at IS NULL"
            " OR webhook_secrets.rotated_at <= now() - $2::interval"
            " RETURNING generation, rotated_at",
            tenant_id,
            ROTATION_GRACE,
        )
        return None if row is None else SecretGeneration(row[0], row[1])

    async def generations(self) -> dict[str, SecretGeneration]:
        """Every rotated tenant's generation: what workers load."""
        rows = await self._pool.fetch(
            "SELECT tenant_id::text, generation, rotated_at FROM webhook_secrets"
        )
        return {row[0]: SecretGeneration(row[1], row[2]) for row in rows}
