"""Tenants and their API keys; keys are shown once and stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from pulse.core.ids import uuid7
from pulse.core.views import KeyView
from pulse.store.key_cache import KeyCache

logger = logging.getLogger("pulse.store.tenants")

KEY_PREFIX = "pk_"
Connection = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class NewTenant:
    tenant_id: str
    name: str
    api_key: str


SCOPES = ("send", "read", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str] = frozenset(SCOPES)
    operator: bool = False


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


Announce = Callable[[], Awaitable[object]]


class TenantStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: KeyCache[Principal] | None = None
        self._announce: Announce | None = None

    def use_cache(self, cache: KeyCache[Principal], announce: Announce) -> None:
        """Serve keys from ``cache``; ``announce`` tells every API process of a revocation and
        returns once they have all emptied their caches (pulse/queue/revocations.py)."""
        self._cache = cache
        self._announce = announce

    @property
    def caching(self) -> bool:
        """True while keys are served from memory (the revocation subscription is live)."""
        return self._cache is not None and self._cache.live()

    async def create(
        self, name: str, api_key: str | None = None, *, operator: bool = False
    ) -> NewTenant:
        """Create a tenant with one full-rights key; ``api_key`` lets ``pulse dev`` choose it."""
        key = api_key or generate_key()
        tenant_id = uuid7()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (id, name, operator) VALUES ($1, $2, $3)",
                tenant_id,
                name,
                operator,
            )
            await self._insert_key(conn, tenant_id, key, SCOPES, "initial")
        return NewTenant(tenant_id=str(tenant_id), name=name, api_key=key)

    async def ensure(self, name: str, api_key: str, *, operator: bool = False) -> str:
        """Idempotently make ``api_key`` a key of tenant ``name``; return the tenant id."""
        async with self._pool.acquire() as conn, conn.transaction():
            tenant_id = await conn.fetchval(
                "INSERT INTO tenants (id, name, operator) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET operator = tenants.operator OR $3"
                " RETURNING id",
                uuid7(),
                name,
                operator,
            )
            await self._insert_key(conn, tenant_id, api_key, SCOPES, "initial")
        return str(tenant_id)

    async def add_key(self, tenant_id: str, scopes: Sequence[str], name: str) -> tuple[str, str]:
        """A new key for the tenant (keys rotate by overlap); return (key id, the key)."""
        key = generate_key()
        async with self._pool.acquire() as conn:
            key_id = await self._insert_key(conn, uuid.UUID(tenant_id), key, scopes, name)
        return key_id, key

    async def keys(self, tenant_id: str) -> list[KeyView]:
        rows = await self._pool.fetch(
            "SELECT id::text, name, key_prefix AS prefix, scopes, created_at, revoked_at"
            " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
            tenant_id,
        )
        return [KeyView(**dict(row)) for row in rows]

    async def revoke(self, tenant_id: str, key_id: str) -> bool:
        """Revoke at once: committed, then every API process's cache emptied before this
        returns. Should Redis fail the announcement, the revocation stands (logged): processes
        that lost Redis too have stopped trusting their caches, and every entry ages out."""
        result: str = await self._pool.execute(
            "UPDATE api_keys SET revoked_at = now()"
            " WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            tenant_id,
            key_id,
        )
        revoked = result.endswith(" 1")
        if revoked and self._cache is not None:
            self._cache.clear()
            await self._tell_everyone(key_id)
        return revoked

    async def _tell_everyone(self, key_id: str) -> None:
        assert self._announce is not None
        try:
            await self._announce()
        except Exception as exc:  # Redis: see ``revoke``
            logger.error("key %s revoked; could not tell the other API processes: %s", key_id, exc)

    async def authenticate(self, api_key: str) -> str | None:
        """The tenant id owning this key, or None for an unknown or revoked key."""
        principal = await self.principal(api_key)
        return None if principal is None else principal.tenant_id

    async def principal(self, api_key: str) -> Principal | None:
        """Who is calling: the key's tenant, the key's id (for the audit) and its rights.

        The lookup is by SHA-256 digest (keys are 256-bit random, so the digest is as secret as
        the key); the stored digest is then compared in constant time all the same. With a
        cache (``use_cache``), a key seen lately is answered from memory."""
        digest = hash_key(api_key)
        cache = self._cache
        if cache is None:
            return await self._look_up(digest)
        found = cache.get(digest)
        if found is not None:
            return found
        generation = cache.generation
        principal = await self._look_up(digest)
        if principal is not None:
            cache.put(digest, principal, generation)
        return principal

    async def _look_up(self, digest: bytes) -> Principal | None:
        row = await self._pool.fetchrow(
            "SELECT k.tenant_id::text, k.id::text, k.scopes, k.key_hash, t.operator"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
            " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            digest,
        )
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            return None
        return Principal(
            tenant_id=row[0], key_id=row[1], scopes=frozenset(row["scopes"]), operator=row[4]
        )

    @staticmethod
    async def _insert_key(
        conn: Connection, tenant_id: uuid.UUID, key: str, scopes: Sequence[str], name: str
    ) -> str:
        key_id = uuid7()
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, key_prefix, scopes, name)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_hash) DO NOTHING",
            key_id,
            tenant_id,
            hash_key(key),
            key[:8],
            list(scopes),
            name,
        )
        return str(key_id)
