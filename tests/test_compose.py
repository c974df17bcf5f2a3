"""compose.yaml is valid and describes the services the README promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_validates_with_docker_compose() -> None:
    """Needs Debian's docker-compose: `make tools` installs it (CI does so in .ci/run)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: `make tools` installs it (CI runs it in .ci/run)")

    result = subprocess.run(
        [binary, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_compose_has_scalable_worker_and_one_shot_migrate() -> None:
    config = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = config["services"]

    assert {"redis", "postgres", "migrate", "api", "worker"} <= set(services)
    worker = services["worker"]
    assert "container_name" not in worker  # --scale worker=4 needs unnamed containers
    assert "ports" not in worker
    assert worker["command"] == ["worker"]
    assert services["migrate"]["command"] == ["migrate"]
    after = services["api"]["depends_on"]["migrate"]["condition"]
    assert after == "service_completed_successfully"
