"""Which database errors mean "PostgreSQL is unreachable right now", and which mean "this value
cannot be stored" (a NUL character, an integer beyond bigint), rather than a bug.

Only connection failures count as an outage: not every OSError (a file the process cannot read,
such as a tzdata folder, says nothing about PostgreSQL and must not answer 503)."""

from __future__ import annotations

import socket

import asyncpg

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    socket.gaierror,  # the database's host name does not resolve (now)
    socket.herror,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    # a connection that dies in the middle of an operation surfaces as this internal error
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)


class DatabaseUnreachable(ConnectionError):
    """A socket error while connecting to PostgreSQL (see ``pool.connect``)."""


# Raised before anything is written: the statement as a whole is refused.
UNSTORABLE_VALUE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError,)
