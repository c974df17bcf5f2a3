"""Tenants and their API keys; keys are shown once and stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from pulse.ids import uuid7

KEY_PREFIX = "pk_"
Connection = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class NewTenant:
    tenant_id: str
    name: str
    api_key: str


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    key_id: str


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class TenantStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, name: str, api_key: str | None = None) -> NewTenant:
        """Create a tenant with one key; ``api_key`` lets ``pulse dev`` choose a fixed one."""
        key = api_key or generate_key()
        tenant_id = uuid7()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant_id, name)
            await self._insert_key(conn, tenant_id, key)
        return NewTenant(tenant_id=str(tenant_id), name=name, api_key=key)

    async def ensure(self, name: str, api_key: str) -> str:
        """Idempotently make ``api_key`` a key of tenant ``name``; return the tenant id."""
        async with self._pool.acquire() as conn, conn.transaction():
            tenant_id = await conn.fetchval(
                "INSERT INTO tenants (id, name) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                uuid7(),
                name,
            )
            await self._insert_key(conn, tenant_id, api_key)
        return str(tenant_id)

    async def authenticate(self, api_key: str) -> str | None:
        """The tenant id owning this key, or None for an unknown or revoked key."""
        principal = await self.principal(api_key)
        return None if principal is None else principal.tenant_id

    async def principal(self, api_key: str) -> Principal | None:
        """Who is calling: the key's tenant and the key's own id (for the audit)."""
        row = await self._pool.fetchrow(
            "SELECT tenant_id::text, id::text FROM api_keys"
            " WHERE key_hash = $1 AND revoked_at IS NULL",
            hash_key(api_key),
        )
        return None if row is None else Principal(tenant_id=row[0], key_id=row[1])

    @staticmethod
    async def _insert_key(conn: Connection, tenant_id: uuid.UUID, key: str) -> None:
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (key_hash) DO NOTHING",
            uuid7(),
            tenant_id,
            hash_key(key),
            key[:8],
        )
