"""Idempotency-Key records (the IETF httpapi draft, as Stripe does it).

``claim`` takes a key for one request in its own short transaction, so a concurrent twin sees
it ``in_flight`` (409) instead of waiting; ``remember`` completes it inside the transaction
that commits the notification, with the answer to replay; ``release`` gives a key back when
the request could not be accepted after all.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pulse.store.tenants import Connection

_CLAIM = """
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, state, expires_at)
VALUES ($1, $2, $3, 'in_flight', now() + make_interval(secs => $4))
ON CONFLICT (tenant_id, key) DO UPDATE
   SET locked_at = now(), expires_at = EXCLUDED.expires_at
 WHERE idempotency_keys.state = 'in_flight'
   AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
   AND idempotency_keys.locked_at < now() - make_interval(secs => $5)
RETURNING true
"""

_EXISTING = """
SELECT fingerprint, state, response_status, response_body, response_location
  FROM idempotency_keys WHERE tenant_id = $1 AND key = $2
"""

_REMEMBER = """
UPDATE idempotency_keys
   SET state = 'done', response_status = $3, response_body = $4, response_location = $5
 WHERE tenant_id = $1 AND key = $2
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key: go ahead."""


@dataclass(frozen=True, slots=True)
class Existing:
    """Someone used the key before: same or other body, still running or answered."""

    same_body: bool
    in_flight: bool
    status: int | None
    body: bytes | None
    location: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    location: str | None


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, retention_s: float, stale_after_s: float) -> None:
        self._pool = pool
        self._retention_s = retention_s
        self._stale_after_s = stale_after_s

    async def claim(self, tenant_id: str, key: str, fingerprint: bytes) -> Claimed | Existing:
        taken = await self._pool.fetchval(
            _CLAIM, tenant_id, key, fingerprint, self._retention_s, self._stale_after_s
        )
        if taken:
            return Claimed()
        row = await self._pool.fetchrow(_EXISTING, tenant_id, key)
        if row is None:  # expired and purged between the two statements: try once more
            return await self.claim(tenant_id, key, fingerprint)
        return Existing(
            same_body=bytes(row["fingerprint"]) == fingerprint,
            in_flight=row["state"] == "in_flight",
            status=row["response_status"],
            body=None if row["response_body"] is None else bytes(row["response_body"]),
            location=row["response_location"],
        )

    @staticmethod
    async def remember(conn: Connection, tenant_id: str, key: str, answer: Answer) -> None:
        await conn.execute(_REMEMBER, tenant_id, key, answer.status, answer.body, answer.location)

    async def release(self, tenant_id: str, key: str) -> None:
        """Give the key back: the request that owns it was not accepted in the end (even if its
        answer was stored with a commit the API then withdrew)."""
        await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", tenant_id, key
        )

    async def purge_expired(self) -> int:
        result: str = await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE expires_at < now()"
        )
        return int(result.split()[-1])
