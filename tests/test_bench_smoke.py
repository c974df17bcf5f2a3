"""`make bench` still runs: the drain section, at smoke size, against the test servers.

It starts real processes (a Pulse worker, each peer from its own virtual environment, made on
first use) and checks what a reader of the report checks: a figure and a ratio for every peer.
No speed is asserted here; speed belongs in the bench itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerUrls

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent


def _env(server_urls: ServerUrls) -> dict[str, str]:
    """The test servers, named to the bench as its own when they listen on TCP (as the bench's
    own servers do: some peers, SAQ among them, take no unix-socket URL); else the bench
    starts servers of its own, as `make bench` does."""
    tcp = server_urls.redis.startswith("redis://") and "host=" not in server_urls.postgres
    named = {
        "PULSE_BENCH_REDIS_URL": server_urls.redis,
        "PULSE_BENCH_DATABASE_URL": server_urls.postgres,
    }
    return (os.environ | named) if tcp else os.environ.copy()


def test_quick_drain_reports_pulse_and_every_peer(server_urls: ServerUrls) -> None:
    # Given the test servers (or the bench's own)
    env = _env(server_urls)
    report = ROOT / "docs" / "benchmarks.md"
    before = report.read_text()
    # When the bench runs its drain section at smoke size, writing nothing
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-report", "--only", "drain"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    # Then it succeeds with a rate for Pulse and a rate and a ratio for each peer
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if "|" in line}
    assert rows["Pulse"].count("|") == 6
    for peer in ("arq", "Dramatiq", "SAQ", "Celery"):
        ratio = rows[peer].split("|")[5].strip()
        assert ratio.endswith("x"), rows[peer]
        assert float(ratio[:-1]) > 0
    # And Pulse's worker CPU per notification, the figure a loaded machine does not skew
    assert "Pulse worker process CPU per notification" in done.stdout
    # And the report is untouched
    assert report.read_text() == before


def test_quick_tasks_report_pulse_results_kept_and_off_beside_every_peer(
    server_urls: ServerUrls,
) -> None:
    # When the bench runs its task sections at smoke size, writing nothing
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-report", "--only",
         "tasks,task_latency"],
        cwd=ROOT, env=_env(server_urls), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    # Then the task drain has Pulse both ways, its notification drain and a ratio for each
    # peer, and the latency table
    # a p50 and a p99 for Pulse's tasks
    assert done.returncode == 0, done.stderr[-3000:]
    drain, latency = done.stdout.split("### Task latency")
    rows = {line.split("|")[1].strip(): line for line in drain.splitlines() if "|" in line}
    assert float(rows["Pulse, results kept"].split("|")[4].replace(",", "")) > 0
    for name in ("Pulse, results off", "Pulse, notifications (log channel)", "arq", "Dramatiq",
                 "SAQ", "Celery"):  # fmt: skip
        ratio = rows[name].split("|")[5].strip()
        assert ratio.endswith("x"), rows[name]
    # and the task path against the notification path, measured in the same run
    assert "Tasks / notifications, same run: results kept" in drain
    rows = {line.split("|")[1].strip(): line for line in latency.splitlines() if "|" in line}
    pulse_latency = rows["Pulse"].split("|")
    assert float(pulse_latency[2]) > 0
    assert float(pulse_latency[3]) >= float(pulse_latency[2])
