"""Which database errors mean "PostgreSQL is unreachable right now", and which mean "this value
cannot be stored" (a NUL character, an integer beyond bigint), rather than a bug."""

from __future__ import annotations

import asyncpg

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    # a connection that dies in the middle of an operation surfaces as this internal error
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)

# Raised before anything is written: the statement as a whole is refused.
UNSTORABLE_VALUE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError,)
