"""Connection pool creation, in one place so every process configures it the same way."""

from __future__ import annotations

from typing import Any

import asyncpg

from pulse.store.errors import DatabaseUnreachable

# asyncpg's own default: each connection keeps its last 100 statements prepared, so a statement
# is parsed and planned once per connection instead of once per call (a round trip saved each).
DEFAULT_STATEMENT_CACHE_SIZE = 100


async def create_pool(
    url: str,
    min_size: int = 1,
    max_size: int = 10,
    *,
    statement_cache_size: int = DEFAULT_STATEMENT_CACHE_SIZE,
) -> asyncpg.Pool:
    """Open a pool. ``statement_cache_size=0`` (PULSE_DB_STATEMENT_CACHE_SIZE=0) is for
    pgbouncer's transaction mode, where a prepared statement may outlive its server session."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=statement_cache_size,
        command_timeout=30,
        reset=_nothing_more_to_reset,
        connect=connect,
    )
    assert pool is not None
    return pool


async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg's connect, a socket error while connecting named for what it is: some are plain
    OSErrors (network unreachable; "Multiple exceptions" when every address of a host refuses),
    which ``TRANSIENT_DB_ERRORS`` no longer counts wholesale."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (ConnectionError, TimeoutError):
        raise
    except OSError as exc:
        raise DatabaseUnreachable(str(exc)) from exc


async def _nothing_more_to_reset(conn: asyncpg.Connection) -> None:
    """What runs on release after asyncpg's own cleanup (which rolls back an open transaction).

    asyncpg's default adds a round trip per release (advisory unlock all, CLOSE ALL, UNLISTEN *,
    RESET ALL) that Pulse never needs: on pooled connections it sets no session setting, listens
    to nothing, opens no cursor beyond a transaction and takes only transaction-scoped advisory
    locks (the migrations' session lock is on a connection of their own)."""
    del conn
