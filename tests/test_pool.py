"""The pool hands out clean connections: a transaction left open (a request cancelled or failed
midway) is rolled back on release, its transaction-scoped advisory lock freed, and the
connection serves the next caller."""

from __future__ import annotations

import pytest

from pulse.store.pool import create_pool

pytestmark = pytest.mark.integration

LOCK = 0x5EED


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    # Given a pool of one connection, used by a caller that leaves a transaction open
    pool = await create_pool(database_url, 1, 1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (id int)")
            assert await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK)
        # When the next caller gets the same connection
        async with pool.acquire() as conn:
            # Then nothing of the open transaction remains: no table, no lock, no transaction
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
            assert not conn.is_in_transaction()
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
            assert await conn.fetchval(held, LOCK) == 0
    finally:
        await pool.close()
