"""The scaling bench's pure parts: point lists, the median run, the page and the chart.

No namespaces and no servers: the figures are made up here, the way a run leaves them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from bench.scaling import point_list
from bench.scaling_inner import median
from bench.scaling_report import BEGIN, END, write

pytestmark = pytest.mark.unit


def _cpu(
    redis: float = 5.0, postgres: float = 30.0, pulse: float = 50.0, machine: float = 60.0
) -> dict[str, float]:
    return {"redis": redis, "postgres": postgres, "pulse": pulse, "load": 4.0, "machine": machine}


def _result(cpu: dict[str, float] | None = None) -> dict[str, Any]:
    cpu = cpu or _cpu()
    drain = [
        {"workers": n, "rate": 1000.0 * n, "jobs": 500, "runs": [1000.0 * n], "cpu": cpu}
        for n in (1, 2, 4)
    ]
    accept = [
        {"processes": n, "rps": 800.0 * n, "connections": 8 * n, "p50_ms": 3.0, "p99_ms": 20.0,
         "errors": 0, "within_bound": True, "runs": [800.0 * n], "cpu": cpu}
        for n in (1, 2)
    ]  # fmt: skip
    return {
        "plan": {"mode": "quick", "runs": 1, "jobs": 500, "p99_ms": 250},
        "machine": {"cpus": 2, "cpu_model": "test", "kernel": "6", "load_average": 0.5},
        "measured_at": "2026-01-01 00:00 UTC",
        "subnet": "10.254.1.0/24",
        "drain": drain,
        "accept": accept,
    }


def _generated(page: str) -> str:
    return page.split(BEGIN, 1)[1].split(END, 1)[0]


def test_point_lists_are_sorted_counts_within_bounds() -> None:
    # Given counts as a person types them, When parsed, Then sorted without repeats
    assert point_list("4,1,2,2") == [1, 2, 4]
    # And counts out of range or not numbers are refused with the reason
    for wrong in ("0,1", "1,99", "one", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            point_list(wrong)


def test_median_is_the_middle_run_with_its_own_cpu_and_every_run_listed() -> None:
    # Given three runs of one point, each with its CPU figures
    runs = [{"rate": rate, "cpu": {"pulse": rate / 100}} for rate in (300.0, 100.0, 200.0)]
    # When the point is their median
    point = median(runs, "rate")
    # Then it is the middle run, its CPU figures its own, and every run is kept
    assert point["rate"] == 200.0
    assert point["cpu"] == {"pulse": 2.0}
    assert sorted(point["runs"]) == [100.0, 200.0, 300.0]
    assert point["spread"] > 0


def test_page_has_a_row_per_point_and_keeps_the_text_around_the_markers(tmp_path: Path) -> None:
    # Given a page with words of its own before and after the markers
    page = tmp_path / "scaling.md"
    page.write_text(f"# Mine\nintro\n{BEGIN}\nold figures\n{END}\nafterword\n")
    # When a run's figures are written
    write(_result(), tmp_path)
    # Then the words around the markers stay, the old figures are gone
    text = page.read_text()
    assert text.startswith("# Mine\nintro\n")
    assert text.endswith("afterword\n")
    assert "old figures" not in text
    # And each table has one row per point, and the chart is a PNG
    rows = [line for line in _generated(text).splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 3 + 2  # two header rows, three drain points, two accept points
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")


def test_a_page_without_markers_is_started_from_the_template(tmp_path: Path) -> None:
    # Given no page yet, When written, Then the figures sit between the markers
    write(_result(), tmp_path)
    generated = _generated((tmp_path / "scaling.md").read_text())
    assert "### Drain" in generated
    assert "### Ceilings" in generated


@pytest.mark.parametrize(
    ("cpu", "verdict"),
    [
        (_cpu(machine=97.0, pulse=150.0), "the CPU of this machine is the ceiling"),
        (_cpu(machine=97.0, pulse=10.0), "rates understate what the machine gives Pulse alone"),
        (_cpu(redis=95.0, machine=70.0), "Redis is the ceiling"),
        (_cpu(machine=40.0), "no resource was saturated"),
    ],
)
def test_ceiling_is_named_from_cpu_use(tmp_path: Path, cpu: dict[str, float], verdict: str) -> None:
    # Given the last points' CPU use, When the page is written, Then it names that ceiling
    write(_result(cpu), tmp_path)
    ceilings = _generated((tmp_path / "scaling.md").read_text()).split("### Ceilings", 1)[1]
    assert verdict in ceilings
