"""The drain curve on several Redis setups (``--redis single,cluster1,cluster3``), from the load
host: one Redis on the database host, a cluster of one master on ``r1``, a cluster of three
masters on ``r1``, ``r2``, ``r3``. Within each run, for each worker count, the setups drain in
turn (interleaved, as bench/cluster_drain.py does), so a slow spell of the shared machine falls on
all of them; each setup's rate is also given against one Redis at the same run and worker count.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Any

from bench import scaling_points
from bench.scaling_inner import median
from bench.scaling_points import Hosts
from bench.scaling_spread import even_token, shards, spread

SETUP_HOSTS: dict[str, tuple[str, ...]] = {
    "single": (),
    "cluster1": ("r1",),
    "cluster3": ("r1", "r2", "r3"),
}
PORTS = {"cluster1": 6380, "cluster3": 6379}  # r1 holds a master of both clusters


def label(name: str, partitions: int) -> str:
    if name == "single":
        return "one Redis (host db), P=1"
    masters = SETUP_HOSTS[name]
    plural = "master" if len(masters) == 1 else "masters"
    return f"cluster of {len(masters)} {plural} ({', '.join(masters)}), P={partitions}"


async def _one(hosts: Hosts, setup: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    token, held = None, {}
    if setup["cluster"]:
        token = even_token(shards(setup["url"]), setup["partitions"])
        where = {address: host for host, address in setup["addresses"].items()}
        held = spread(setup["url"], f"bench{token}", setup["partitions"], where)
    result = await scaling_points.drain(
        hosts, setup["url"], plan["database_url"], plan["jobs"],
        cluster=setup["cluster"], partitions=setup["partitions"], token=token,
    )  # fmt: skip
    return result | {"partitions_on": held}


async def drain_setups(hosts: Hosts, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every setup's drain curve; ``plan["setups"]`` lists them, one Redis first if present."""
    setups = plan["setups"]
    found: dict[tuple[str, int], list[dict[str, Any]]] = {
        (setup["name"], count): [] for setup in setups for count in plan["workers"]
    }
    for run in range(plan["runs"]):
        for count in plan["workers"]:
            baseline = 0.0
            for setup in setups:
                point = dataclasses.replace(
                    hosts, workers=hosts.workers[:count], masters=setup["masters"]
                )
                result = await _one(point, setup, plan)
                if setup["name"] == "single":
                    baseline = result["rate"]
                result["ratio"] = round(result["rate"] / baseline, 3) if baseline else None
                found[setup["name"], count].append(result)
                ratio = f" ({result['ratio']:.2f}x)" if baseline else ""
                print(
                    f"run {run + 1}, {count} worker(s), {setup['label']}: "
                    f"{result['rate']:,.0f}/s{ratio}; partitions per master "
                    f"{result['partitions_on'] or '-'}",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
    curves = []
    for setup in setups:
        points = []
        for count in plan["workers"]:
            runs = found[setup["name"], count]
            ratios = [run["ratio"] for run in runs if run["ratio"] is not None]
            points.append(
                {"workers": count}
                | median(runs, "rate")
                | {"ratio": statistics.median(ratios) if ratios else None, "ratios": ratios}
            )
        public = {key: setup[key] for key in ("name", "label", "partitions", "addresses")}
        first = found[setup["name"], plan["workers"][0]][0]["partitions_on"]
        curves.append(public | {"drain": points, "partitions_on": first})
    return curves
