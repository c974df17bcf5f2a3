"""``pulse migrate``: apply the numbered files of ``sql/`` once each, in order.

Safe to run from several processes at once: a session advisory lock serialises them, and each
file is applied in its own transaction together with its row in ``schema_migrations``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

_LOCK_KEY = 0x70756C7365  # "pulse"
Connection = asyncpg.Connection | PoolConnectionProxy
_NAME = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def sql_dir() -> Path:
    """``sql/`` beside the package in a checkout, ``pulse/_sql`` in an installed wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "sql", here / "_sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no sql/ directory found beside the pulse package")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or sql_dir()).glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], path.read_text()))
    return found


async def migrate_database(database_url: str) -> list[int]:
    """Connect, apply what is missing, close: how the CLI, the tests and the bench migrate."""
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def migrate(conn: Connection, up_to: int | None = None) -> list[int]:
    """Apply what is missing (up to version ``up_to``, when given: a test that fills a database
    under an older schema); return the versions applied by this call."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def pending_versions(conn: Connection) -> list[int]:
    """Versions on disk not yet applied: ``/readyz`` is not ready while this is non-empty."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.version for m in load_migrations() if m.version not in done]
