"""`make scaling` runs: both curves at their smallest points across simulated hosts, and every
namespace it made is gone afterwards, after a normal end, a SIGTERM, or a SIGKILL and --cleanup.

The run starts its own network namespaces, redis-server and PostgreSQL (root is needed, as for
`make scaling`); it touches neither the shared test servers nor the host's root namespace. No
speed is asserted: the figures are the report's, checked for presence and sense.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 280
NAMESPACE_WAIT_S = 120


def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _run_names(pid: int) -> list[str]:
    return [name for name in _namespaces() if name.startswith(f"pulse-sc-{pid}-")]


def _start(out: Path, *points: str) -> subprocess.Popen[str]:
    """The run, its output in files: a killed run's servers would hold pipes open. ``points``:
    which curves and setups (both curves at 1 and 2 processes by default)."""
    command = [
        sys.executable,
        "-m",
        "bench.scaling",
        "--quick",
        *(points or ("--workers", "1,2", "--apis", "1,2")),
        "--docs",
        str(out),
        "--json",
        str(out / "scaling.json"),
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with (out / "stdout").open("w") as stdout, (out / "stderr").open("w") as stderr:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def _pids(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_for_measuring(process: subprocess.Popen[str]) -> tuple[list[str], list[int]]:
    """Until the servers run on the db host and the harness on the load host: the run's names
    and the pids inside its namespaces."""
    deadline = time.monotonic() + NAMESPACE_WAIT_S
    load = f"pulse-sc-{process.pid}-load"
    while time.monotonic() < deadline and process.poll() is None:
        if _pids(load):
            names = _run_names(process.pid)
            return names, [pid for name in names for pid in _pids(name)]
        time.sleep(0.1)
    raise AssertionError("the run did not start measuring")


def test_quick_run_reports_both_curves_and_removes_its_namespaces(tmp_path: Path) -> None:
    # Given a quick run writing its report into a folder of the test's
    process = _start(tmp_path)
    # When it runs to its end
    process.wait(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    # Then every point of both curves is present, with a rate and the servers' CPU use
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert [point["workers"] for point in result["drain"]] == [1, 2]
    assert [point["processes"] for point in result["accept"]] == [1, 2]
    for point in result["drain"]:
        assert point["rate"] > 0
        assert point["jobs"] == result["plan"]["jobs"]
    for point in result["accept"]:
        assert point["rps"] > 0
        assert point["errors"] == 0
        assert point["p99_ms"] >= point["p50_ms"] > 0
    for point in [*result["drain"], *result["accept"]]:
        assert {"redis", "postgres", "pulse", "load", "machine"} <= point["cpu"].keys()
        assert point["cpu"]["pulse"] > 0
    # And the page and the chart are written, the table between the markers
    page = (tmp_path / "scaling.md").read_text()
    generated = page.split("<!-- scaling:begin -->", 1)[1].split("<!-- scaling:end -->", 1)[0]
    for heading in ("### Drain", "### Accept", "### Ceilings"):
        assert heading in generated
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")
    # And none of the run's namespaces is left
    nodes = ("db", "api", "load", "w1", "w2", "br")
    assert {f"pulse-sc-{process.pid}-{node}" for node in nodes} == set(result["namespaces"])
    assert not set(result["namespaces"]) & set(_namespaces())


def test_sigterm_mid_run_removes_the_namespaces(tmp_path: Path) -> None:
    # Given a run whose hosts exist
    process = _start(tmp_path)
    try:
        names, pids = _wait_for_measuring(process)
        # (whose traffic has nowhere to go but the sandbox: no host has a default route)
        for name in names:
            assert _ip("-n", name, "route", "show", "default") == ""
        # When it is told to stop
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Then it unwound: nothing of it is left, neither namespaces nor processes
    assert process.returncode != 0
    assert names
    assert _run_names(process.pid) == []
    assert not [pid for pid in pids if _alive(pid)]


def test_cleanup_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    # Given a run killed outright once its hosts exist (no finally runs)
    process = _start(tmp_path)
    try:
        names, pids = _wait_for_measuring(process)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert set(names) <= set(_namespaces())
    # When --cleanup runs
    cleanup = [sys.executable, "-m", "bench.scaling", "--cleanup"]
    done = subprocess.run(cleanup, cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Then the killed run's namespaces and the processes left in them are gone, named in its answer
    assert done.returncode == 0, done.stderr
    assert _run_names(process.pid) == []
    assert all(name in done.stdout for name in names)
    assert pids
    assert not [pid for pid in pids if _alive(pid)]
    # And so is its servers' data folder
    assert not list(Path(tempfile.gettempdir()).glob(f"pulse-scaling-{process.pid}-*"))


def _stopped(process: subprocess.Popen[str]) -> None:
    """A run still going (a failed wait) is stopped, and whatever it left removed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            cleanup = [sys.executable, "-m", "bench.scaling", "--cleanup"]
            subprocess.run(cleanup, cwd=ROOT, capture_output=True, timeout=120)


def test_cluster_run_spreads_partitions_over_masters_on_hosts_of_their_own(tmp_path: Path) -> None:
    # Given the project's page, and a quick drain on one Redis and on a cluster of 3 masters
    original = (ROOT / "docs" / "scaling.md").read_text()
    (tmp_path / "scaling.md").write_text(original)
    process = _start(tmp_path, "--workers", "1", "--redis", "single,cluster3")
    try:
        # When it runs to its end
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        _stopped(process)
    assert process.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    # Then both setups drained every notification, one Redis being the ratios' baseline
    result = json.loads((tmp_path / "scaling.json").read_text())
    single, cluster = result["setups"]
    assert (single["name"], cluster["name"]) == ("single", "cluster3")
    for setup in (single, cluster):
        [point] = setup["drain"]
        assert point["workers"] == 1
        assert point["jobs"] == result["plan"]["jobs"]
        assert point["rate"] > 0
        assert point["cpu"]["pulse"] > 0
    assert single["drain"][0]["ratio"] == 1.0
    # And the cluster's 6 partitions were held by its three hosts, some on each
    held = cluster["partitions_on"]
    assert set(held) == {"r1", "r2", "r3"}
    assert all(held.values())
    assert sorted(n for numbers in held.values() for n in numbers) == list(range(6))
    # And its Redis CPU is the sum of its masters, each given on its own
    cpu = cluster["drain"][0]["cpu"]
    masters = [cpu[f"redis@{host}"] for host in ("r1", "r2", "r3")]
    assert cpu["redis"] == pytest.approx(sum(masters), abs=0.5)
    # And the page gained the cluster section; the single-Redis figures stay as they were
    page = (tmp_path / "scaling.md").read_text()
    section = page.split("<!-- scaling-cluster:begin -->", 1)[1]
    assert "### Drain on cluster of 3 masters (r1, r2, r3), P=6" in section
    single_part = original.split("<!-- scaling:end -->", 1)[0]
    assert page.startswith(single_part)
    assert (tmp_path / "scaling-cluster.png").read_bytes().startswith(b"\x89PNG")
    # And none of the run's namespaces is left, the masters' hosts included
    assert {f"pulse-sc-{process.pid}-r{i}" for i in (1, 2, 3)} <= set(result["namespaces"])
    assert not set(result["namespaces"]) & set(_namespaces())
