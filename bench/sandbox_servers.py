"""Redis and PostgreSQL of their own on the sandbox's database host (bench/scaling.py).

Debian's ``redis-server`` and PostgreSQL binaries (``pg_ctl`` run as the ``postgres`` user, in a
temporary data folder), both listening only on the database host's sandbox address, persisting
nothing beyond the run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0
REDIS_PORT = 6379
PG_PORT = 5432
WORKDIR_PREFIX = "pulse-scaling-"  # then the run's pid: a crashed run's folder is found by it
PG_MAX_CONNECTIONS = 300  # 4 API and 4 worker processes with pools of 10, and the harness


@dataclass(frozen=True)
class DbHost:
    redis_url: str
    database_url: str  # the admin database; every measurement makes its own beside it
    redis_pid: int
    postgres_pid: int  # the postmaster: its backends are its children


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found[-1]


@contextlib.contextmanager
def db_host(prefix: Sequence[str], address: str) -> Iterator[DbHost]:
    """Both servers started with ``prefix`` (the host's `ip netns exec`), stopped on the way out."""
    with contextlib.ExitStack() as stack:
        folder = tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
        workdir = Path(stack.enter_context(folder))
        workdir.chmod(0o755)
        redis_pid = stack.enter_context(redis_server(prefix, address, workdir / "redis"))
        postgres_pid = stack.enter_context(_postgres(prefix, address, workdir / "postgres"))
        yield DbHost(
            redis_url=f"redis://{address}:{REDIS_PORT}/0",
            database_url=f"postgresql://postgres@{address}:{PG_PORT}/postgres",
            redis_pid=redis_pid,
            postgres_pid=postgres_pid,
        )


@contextlib.contextmanager
def redis_server(
    prefix: Sequence[str],
    address: str,
    workdir: Path,
    port: int = REDIS_PORT,
    flags: Sequence[str] = (),
) -> Iterator[int]:
    """One redis-server on ``address`` (``flags``: cluster mode, for bench/sandbox_cluster.py);
    its pid, once it answers; stopped on the way out."""
    workdir.mkdir()
    binary = shutil.which("redis-server") or "redis-server"
    command = [
        *prefix, binary, "--bind", address, "--port", str(port), "--protected-mode", "no",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
        "--logfile", str(workdir / "log"), *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ping = [*prefix, "redis-cli", "-h", address, "-p", str(port), "ping"]
        wait(lambda: _ok(ping) and process.poll() is None, "redis-server")
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ok(command: Sequence[str]) -> bool:
    done = subprocess.run(command, capture_output=True, timeout=10)
    return done.returncode == 0


def wait(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox's {what} did not start within {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def _postgres(prefix: Sequence[str], address: str, pgdata: Path) -> Iterator[int]:
    as_postgres = ["runuser", "-u", "postgres", "--"]
    pgdata.mkdir(mode=0o700)
    shutil.chown(pgdata, "postgres", "postgres")
    initdb = [_pg_bin("initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run([*as_postgres, *initdb], check=True, capture_output=True, timeout=120)
    with (pgdata / "pg_hba.conf").open("a") as hba:
        subnet = address.rsplit(".", 1)[0] + ".0/24"
        hba.write(f"host all all {subnet} trust\n")
    options = f"-h {address} -p {PG_PORT} -k {pgdata} -c max_connections={PG_MAX_CONNECTIONS}"
    pg_ctl = [_pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", str(int(START_TIMEOUT_S))]
    start = [*pg_ctl, "-o", options, "-l", str(pgdata / "log"), "start"]
    subprocess.run([*prefix, *as_postgres, *start], check=True, capture_output=True, timeout=90)
    try:
        yield int((pgdata / "postmaster.pid").read_text().split()[0])
    finally:
        stop = [*as_postgres, *pg_ctl, "-m", "fast", "stop"]
        subprocess.run(stop, capture_output=True, timeout=90)


def remove_leftover_folders(alive: Callable[[int], bool]) -> list[str]:
    """Delete the data folders of runs whose process is gone (a crash, a SIGKILL)."""
    removed = []
    pattern = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        found = pattern.match(path.name)
        if found and not alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed
