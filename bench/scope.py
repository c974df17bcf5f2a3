"""A fresh, migrated database and a key prefix of their own for one measurement, removed after.

Every Pulse measurement starts from nothing (no rows, no streams), so one run cannot slow the
next, and a shared server named by PULSE_BENCH_*_URL is left as it was found.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from pulse.queue.client import open_redis
from pulse.queue.keys import QueueKeys
from pulse.store.migrations import migrate_database


@dataclass(frozen=True)
class Scope:
    redis_url: str
    database_url: str
    prefix: str
    cluster: bool = False  # redis_url names a node of a Redis Cluster

    def env(self) -> dict[str, str]:
        """The variables that point a Pulse process at this scope."""
        return {
            "PULSE_REDIS_URL": self.redis_url,
            "PULSE_DATABASE_URL": self.database_url,
            "PULSE_KEY_PREFIX": self.prefix,
            "PULSE_LOG_LEVEL": "WARNING",
        } | ({"PULSE_REDIS_CLUSTER": "true"} if self.cluster else {})


@asynccontextmanager
async def fresh_scope(
    redis_url: str, admin_url: str, *, cluster: bool = False, token: str | None = None
) -> AsyncIterator[Scope]:
    """``token`` (8 hex digits; random by default) names the database and the key prefix: the
    cluster bench picks one whose partitions spread over the masters."""
    token = token or secrets.token_hex(4)
    name = f"pulse_bench_{token}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    try:
        await migrate_database(url)
        yield Scope(redis_url, url, f"bench{token}", cluster)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        await _delete_keys(redis_url, f"bench{token}", cluster)


async def _delete_keys(redis_url: str, prefix: str, cluster: bool) -> None:
    redis: Redis = open_redis(redis_url, cluster=cluster)
    try:
        keys = set(QueueKeys(prefix).all_keys())
        keys.update([key async for key in redis.scan_iter(match=f"*{prefix}*", count=1000)])
        for key in keys:
            await redis.unlink(key)
    finally:
        await redis.aclose()
