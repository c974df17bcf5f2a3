"""The peers of `make bench` (arq, Dramatiq, SAQ, Celery), each run from a virtual environment
of its own under .bench-venv/PEER (made on first use by bench/setup_venv.sh from the pinned
bench/PEER/requirements.txt). Each peer's script prints one JSON line: its figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".bench-venv"
DRAIN_PEERS = ("arq", "dramatiq", "saq", "celery")
LATENCY_PEERS = ("saq", "dramatiq")
RUN_TIMEOUT_S = 900


def python(peer: str) -> Path:
    """The peer's interpreter, its environment made or brought up to date first."""
    venv = VENVS / peer
    requirements = ROOT / "bench" / peer / "requirements.txt"
    script = ROOT / "bench" / "setup_venv.sh"
    subprocess.run(["bash", str(script), str(venv), str(requirements)], check=True)
    return venv / "bin" / "python"


def run_script(peer: str, script: str, *args: str) -> dict[str, Any]:
    command = [str(python(peer)), str(ROOT / "bench" / peer / script), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT / "bench" / peer
    )
    if done.returncode != 0:
        raise RuntimeError(f"{peer} {script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def drain(peer: str, redis_url: str, jobs: int) -> dict[str, Any]:
    return run_script(peer, "drain.py", "--redis-url", redis_url, "--jobs", str(jobs))


def latency(peer: str, redis_url: str, rate: float, seconds: float) -> dict[str, Any]:
    args = ("--redis-url", redis_url, "--rate", str(rate), "--seconds", str(seconds))
    return run_script(peer, "latency.py", *args)
