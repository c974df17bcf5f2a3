"""Debian's Prometheus for the tests: promtool, and a real server on loopback in a temp dir.

Both come from the `prometheus` package; ``scripts/install-prometheus.sh`` installs it where
missing (``make tools`` and CI run it; the tests run it too, and fail if it is still missing).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from pulse.devtools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "install-prometheus.sh"


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``, installed first where missing."""
    if shutil.which(name) is None:
        subprocess.run(["bash", str(INSTALL)], check=False, timeout=600)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make tools` installs it ({INSTALL.name})")
    return path


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class PrometheusServer:
    """A Prometheus scraping ``targets`` (host:port, by job) every ``interval``, with
    ``rule_files``; on a loopback port, its data in a temp dir removed on stop."""

    def __init__(
        self, targets: dict[str, list[str]], rule_files: list[Path], interval: str = "1s"
    ) -> None:
        self._targets = targets
        self._rule_files = rule_files
        self._interval = interval
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self._dir = tempfile.TemporaryDirectory(prefix="pulse-prometheus-")
        workdir = Path(self._dir.name)
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        self._log = (workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=self._log,
        )
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._log.close()
        if self._dir is not None:
            self._dir.cleanup()

    def log(self) -> str:
        assert self._dir is not None
        return (Path(self._dir.name) / "prometheus.log").read_text(errors="replace")

    def _config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self._interval, "evaluation_interval": self._interval},
            "rule_files": [str(path) for path in self._rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self._targets.items()
            ],
        }

    def _wait_ready(self) -> None:
        for _ in range(300):
            assert self._process is not None
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus never became ready:\n{self.log()}")

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; the decoded JSON answer (errors included, as Prometheus sends)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as answer:
                return msgspec.json.decode(answer.read())
        except urllib.error.HTTPError as error:
            return msgspec.json.decode(error.read())

    def query(self, expr: str) -> Any:
        return self.get("/api/v1/query", query=expr)
