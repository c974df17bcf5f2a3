"""Pulse's own processes for the bench: a worker (bench.pulse_worker) and the API (`pulse api`).

Each gets an environment holding only its scope's PULSE_* variables (none of the caller's), and
runs from a folder without a ``.env``, so nothing but the bench decides their settings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bench.scope import Scope

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".pulse" / "bench"  # each process's stderr, overwritten by the next one
STOP_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0


def log_file(name: str) -> IO[str]:
    LOGS.mkdir(parents=True, exist_ok=True)
    return (LOGS / f"{name}.log").open("w")


def clean_env(extra: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PYTHONPATH"] = str(root)
    return env | extra


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin:
        with contextlib.suppress(OSError):
            process.stdin.close()
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Go:
    """Starts a waiting worker process (``go()`` returns the time it was told to); ``cpu_s()``
    is the CPU time (user + system) the process has used so far, from /proc (Linux)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def __call__(self) -> float:
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        return time.perf_counter()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def pulse_worker(
    scope: Scope, extra_env: dict[str, str] | None = None, root: Path = ROOT
) -> Iterator[Go]:
    """A connected worker process waiting for ``go()``, which starts it and returns the time;
    ``root``: the source tree it runs (another revision's, to compare with)."""
    with log_file("worker") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.pulse_worker"],
            env=clean_env(scope.env() | (extra_env or {}), root),
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the bench's Pulse worker did not start: see {LOGS}/worker.log")
        yield Go(process)
    finally:
        _stop(process)


@contextlib.contextmanager
def pulse_api(scope: Scope, port: int) -> Iterator[str]:
    """`pulse api` (one process) on 127.0.0.1:``port``; yields its base URL once it answers."""
    env = clean_env(scope.env() | {"PULSE_HTTP_HOST": "127.0.0.1", "PULSE_HTTP_PORT": str(port)})
    with tempfile.TemporaryDirectory(prefix="pulse-bench-api-") as cwd, log_file("api") as log:
        command = [sys.executable, "-m", "pulse", "api"]
        process = subprocess.Popen(command, env=env, cwd=cwd, stderr=log, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz", process)
            yield base
        finally:
            _stop(process)


def wait_http(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT_S:.0f} s (logs: {LOGS})")
