"""Idempotency-Key records (the IETF httpapi draft, as Stripe does it).

The claim is a transaction-scoped advisory lock on (tenant, key), taken by the transaction
that commits the request's notification (or batch) together with the answer to replay. So the
claim lives exactly as long as its owner's transaction: a commit, a rollback, a dropped
connection or a PostgreSQL restart each end it, with no release to send and nothing left
behind when PostgreSQL is unreachable (a retry after a 503 is processed normally). A concurrent
twin finds the lock taken and gets 409 at once instead of queueing on a row lock. A
transaction-scoped lock also stays correct behind pgbouncer's transaction pooling.

Only answered keys are stored (``state = 'done'``); a legacy ``in_flight`` row (left by an
earlier version) or an expired one is taken over.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pulse.store.tenants import Connection

# The lock first, then the lookup. Both in one statement: a twin that commits between this
# statement's snapshot and the lock is caught by the insert instead (see REMEMBER_SQL).
_CLAIM = """
SELECT pg_try_advisory_xact_lock($1) AS mine, now() AS now, k.fingerprint, k.response_status,
       k.response_body, k.response_location
  FROM (SELECT 1) AS one
  LEFT JOIN idempotency_keys k
    ON k.tenant_id = $2 AND k.key = $3 AND k.state = 'done' AND k.expires_at > now()
"""

# A CTE for the statement that commits the request: it stores the answer, and returns a row
# only when the key was free, so the request's own insert can depend on it (``FROM k``).
# A key row is taken over only when a legacy ``in_flight`` or expired one is in the way.
REMEMBER_COLUMNS = """INSERT INTO idempotency_keys AS old
        (tenant_id, key, fingerprint, state, response_status, response_body, response_location,
         expires_at)"""
REMEMBER_ON_CONFLICT = """ON CONFLICT (tenant_id, key) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, state = 'done', locked_at = now(),
           response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body,
           response_location = EXCLUDED.response_location, created_at = now(),
           expires_at = EXCLUDED.expires_at
     WHERE old.state = 'in_flight' OR old.expires_at <= now()"""
REMEMBER_SQL = f"""
k AS (
    {REMEMBER_COLUMNS}
    VALUES ({{tenant}}, ${{n}}::text, ${{n1}}::bytea, 'done', ${{n2}}::smallint, ${{n3}}::bytea,
            ${{n4}}::text, now() + make_interval(secs => ${{n5}}::float8))
    {REMEMBER_ON_CONFLICT}
    RETURNING 1
)"""

# The claim of many keys at once (the API's group commit): the same lock and lookup per key.
_CLAIM_MANY = """
SELECT pg_try_advisory_xact_lock(t.lock) AS mine, now() AS now, k.fingerprint,
       k.response_status, k.response_body, k.response_location
  FROM unnest($1::bigint[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(lock, tenant_id, key, i)
  LEFT JOIN idempotency_keys k
    ON k.tenant_id = t.tenant_id AND k.key = t.key AND k.state = 'done' AND k.expires_at > now()
 ORDER BY t.i
"""


def remember_cte(tenant: str, first: int) -> str:
    """``REMEMBER_SQL`` with the tenant's expression and parameters numbered from ``first``
    (the six of ``Remembered.args``)."""
    numbers = {f"n{i}" if i else "n": first + i for i in range(6)}
    return REMEMBER_SQL.format(tenant=tenant, **numbers)


@dataclass(frozen=True, slots=True)
class Remembered:
    """The answer to store with the key, committed with what it answers."""

    key: str
    fingerprint: bytes
    status: int
    body: bytes
    location: str | None
    retention_s: float

    def args(self) -> tuple[object, ...]:
        return (
            self.key,
            self.fingerprint,
            self.status,
            self.body,
            self.location,
            self.retention_s,
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key until ``connection``'s transaction ends; ``now`` is that
    transaction's time (what ``DEFAULT now()`` columns it writes will hold)."""

    connection: Connection
    now: datetime


@dataclass(frozen=True, slots=True)
class Busy:
    """Another request holds the key right now."""


@dataclass(frozen=True, slots=True)
class Existing:
    """The key was answered before: the same request again, or another body."""

    same_body: bool
    status: int
    body: bytes
    location: str | None


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, retention_s: float) -> None:
        self._pool = pool
        self.retention_s = retention_s

    @asynccontextmanager
    async def claim(
        self, tenant_id: str, key: str, fingerprint: bytes
    ) -> AsyncIterator[Claimed | Busy | Existing]:
        """Hold the key for the block, inside one transaction on one connection: what the
        block writes on ``Claimed.connection`` commits when it ends without an exception."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_CLAIM, lock_id(tenant_id, key), tenant_id, key)
            assert row is not None
            found = _claim(row, fingerprint)
            yield Claimed(conn, row["now"]) if found is None else found

    @asynccontextmanager
    async def claim_many(
        self, keys: Sequence[tuple[str, str, bytes]]
    ) -> AsyncIterator[tuple[Connection, datetime, list[Busy | Existing | None]]]:
        """``claim`` for many (tenant, key, fingerprint) at once, in one transaction: each key
        is Busy, Existing or None (free, held until the transaction ends); ``keys`` holds no
        (tenant, key) twice. Yields the connection, its transaction's time and the claims."""
        locks = [lock_id(tenant_id, key) for tenant_id, key, _ in keys]
        tenants = [tenant_id for tenant_id, _, _ in keys]
        names = [key for _, key, _ in keys]
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_MANY, locks, tenants, names)
            claims = [_claim(row, key[2]) for row, key in zip(rows, keys, strict=True)]
            yield conn, rows[0]["now"], claims

    async def purge_expired(self) -> int:
        result: str = await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE expires_at < now()"
        )
        return int(result.split()[-1])


def _claim(row: asyncpg.Record, fingerprint: bytes) -> Busy | Existing | None:
    if not row["mine"]:
        return Busy()
    if row["fingerprint"] is None:
        return None
    return Existing(
        same_body=bytes(row["fingerprint"]) == fingerprint,
        status=row["response_status"],
        body=bytes(row["response_body"]),
        location=row["response_location"],
    )


def lock_id(tenant_id: str, key: str) -> int:
    """The advisory lock's 64-bit id for (tenant, key). A collision (odds 2^-64 per pair in
    flight at once) would only answer 409 to an unrelated request, which its retry clears."""
    digest = hashlib.blake2b(
        f"{tenant_id}\x00{key}".encode(), digest_size=8, person=b"pulse-idem"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)
