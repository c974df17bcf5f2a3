"""The cluster side of the scaling bench's pure parts: the --redis list, the choice of a key prefix
whose partitions spread over the masters, and the page's cluster section and chart.

No namespaces and no servers: slot ranges and figures are made up here, the way a run leaves them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from bench.scaling import redis_setups
from bench.scaling_cluster_report import BEGIN, CHART, END, write
from bench.scaling_report import BEGIN as SINGLE_BEGIN
from bench.scaling_report import END as SINGLE_END
from bench.scaling_spread import even_token, tags

pytestmark = pytest.mark.unit

THREE_MASTERS = [("10.0.0.1", 0, 5460), ("10.0.0.2", 5461, 10922), ("10.0.0.3", 10923, 16383)]


def _point(workers: int, rate: float, masters: dict[str, float], ratio: float) -> dict[str, Any]:
    each = {f"redis@{host}": value for host, value in masters.items()}
    cpu = {"redis": sum(masters.values()) or 5.0, "postgres": 40.0, "pulse": 50.0, "load": 4.0,
           "machine": 70.0} | each  # fmt: skip
    return {"workers": workers, "rate": rate, "runs": [rate], "ratio": ratio, "cpu": cpu}


def _result() -> dict[str, Any]:
    single = {"name": "single", "label": "one Redis (host db), P=1", "partitions": 1,
              "addresses": {}, "partitions_on": {},
              "drain": [_point(n, 1000.0 * n, {}, 1.0) for n in (1, 2)]}  # fmt: skip
    masters = {"r1": 3.0, "r2": 2.0, "r3": 1.0}
    three = {"name": "cluster3", "label": "cluster of 3 masters (r1, r2, r3), P=6",
             "partitions": 6, "addresses": {"r1": "a", "r2": "b", "r3": "c"},
             "partitions_on": {"r1": [0, 3], "r2": [1, 4], "r3": [2, 5]},
             "drain": [_point(n, 900.0 * n, masters, 0.9) for n in (1, 2)]}  # fmt: skip
    return {
        "plan": {"mode": "quick", "runs": 1, "jobs": 500},
        "machine": {"cpus": 2, "cpu_model": "test", "kernel": "6", "load_average": 0.5},
        "measured_at": "2026-01-01 00:00 UTC",
        "subnet": "10.254.1.0/24",
        "setups": [single, three],
    }


def test_redis_setups_are_known_names_one_redis_first() -> None:
    # Given setups as a person types them, When parsed, Then one Redis comes first, no repeats
    assert redis_setups("cluster3,single,cluster3") == ["single", "cluster3"]
    assert redis_setups("cluster1") == ["cluster1"]
    # And an unknown setup is refused with the known ones named
    with pytest.raises(argparse.ArgumentTypeError, match="cluster1"):
        redis_setups("single,cluster9")


def test_even_token_spreads_six_partitions_two_per_master() -> None:
    # Given three masters with the usual slot ranges, When a prefix is chosen for 6 partitions
    token = even_token(THREE_MASTERS, 6)
    # Then each master's range holds exactly two of its partitions' hash tags
    slots = [key_slot(tag.encode()) for tag in tags(f"bench{token}", 6)]
    for _, first, last in THREE_MASTERS:
        assert sum(first <= slot <= last for slot in slots) == 2


def test_cluster_section_keeps_the_single_redis_figures(tmp_path: Path) -> None:
    # Given a page with the single-Redis figures and no cluster section yet
    page = tmp_path / "scaling.md"
    original = f"# Scaling\n{SINGLE_BEGIN}\nsingle figures\n{SINGLE_END}\nafterword\n"
    page.write_text(original)
    # When a cluster run is written, twice (the second replaces the first)
    write(_result(), tmp_path)
    write(_result(), tmp_path)
    # Then the page starts as it was, and holds one cluster section after it
    text = page.read_text()
    assert text.startswith(original)
    assert text.count(BEGIN) == 1
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    # With a table per setup, a row per worker count, the ratio and Redis CPU per master
    assert section.count("### Drain on ") == 2
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * (1 + 2)  # per setup: the header, a row per worker count
    assert "| 2 | 1,800 | 0.90x |" in section
    assert "r1 3, r2 2, r3 1" in section
    assert "r1 [0, 3], r2 [1, 4], r3 [2, 5]" in section
    # And each setup's ceiling, the busiest master named, and the chart
    assert "The busiest master, r1, used 3%" in section
    assert (tmp_path / CHART).read_bytes().startswith(b"\x89PNG")
