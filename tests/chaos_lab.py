"""A small lab for the chaos test: servers it may kill, Pulse processes it may SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pulse.devtools.embedded import EmbeddedPostgres, EmbeddedRedis
from pulse.devtools.ports import free_port


class PulseProcess:
    """One `pulse api` or `pulse worker` process, restartable under a fresh consumer name."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.incarnation = 0
        self.names: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.incarnation += 1
        name = f"{self.command}-{self.log.stem}-{self.incarnation}"
        self.names.append(name)
        env = self.env | {"PULSE_WORKER_CONSUMER": name}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pulse", self.command],
                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def kill(self) -> str:
        """SIGKILL; return the consumer name that died."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        return self.names[-1]

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class Lab:
    """Redis and PostgreSQL of the lab's own, so they can be restarted and stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = EmbeddedRedis(workdir / "redis")
        self.postgres = EmbeddedPostgres(workdir / "postgres")
        self.http_port = free_port("127.0.0.1")

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()

    def stop(self) -> None:
        self.postgres.stop()
        self.redis.stop()

    def restart_redis_empty(self) -> None:
        self.redis.stop()
        self.redis.start()


@contextlib.contextmanager
def running_lab(prefix: str) -> Iterator[Lab]:
    """A started lab in a temporary folder of its own, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        os.chmod(workdir, 0o755)
        lab = Lab(Path(workdir))
        lab.start()
        try:
            yield lab
        finally:
            lab.stop()
