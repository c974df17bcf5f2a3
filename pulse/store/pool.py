"""Connection pool creation, in one place so every process configures it the same way."""

from __future__ import annotations

import asyncpg


async def create_pool(url: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool. ``statement_cache_size=0`` keeps it usable behind pgbouncer's transaction mode
    at no real cost here: Pulse's statements are few and planned quickly."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, statement_cache_size=0, command_timeout=30
    )
    assert pool is not None
    return pool
