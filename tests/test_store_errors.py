"""Which errors count as "PostgreSQL unreachable" (a 503 and a retry) and which do not."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.pool import create_pool

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        socket.gaierror(-2, "unknown host"),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.InterfaceError("connection is closed"),
    ],
)
def test_connection_failures_are_transient(error: BaseException) -> None:
    assert isinstance(error, TRANSIENT_DB_ERRORS)


@pytest.mark.parametrize(
    "error",
    [
        IsADirectoryError(21, "Is a directory", "/usr/share/zoneinfo/America"),
        FileNotFoundError(2, "No such file"),
        PermissionError(13, "Permission denied"),
    ],
)
def test_a_local_file_error_is_no_database_outage(error: BaseException) -> None:
    # A file the process cannot read says nothing about PostgreSQL: not a 503 "database unreachable"
    assert not isinstance(error, TRANSIENT_DB_ERRORS)


async def test_a_socket_that_is_not_there_is_an_outage(tmp_path: Path) -> None:
    # PostgreSQL's Unix socket folder missing (a plain OSError, not a ConnectionError): still
    # "database unreachable", so the API answers 503 and the workers retry
    url = f"postgresql://postgres@/postgres?host={tmp_path / 'gone'}"
    with pytest.raises(TRANSIENT_DB_ERRORS):
        await create_pool(url, 1, 1)
