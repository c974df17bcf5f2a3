"""The load host's half of bench/scaling.py: every point of both curves, each the median of its
runs, measured from inside the ``load`` namespace (the only place the servers can be reached)."""

from __future__ import annotations

import statistics
from typing import Any

from bench import scaling_points
from bench.scaling_points import Hosts


def median(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose rate is the median (the lower middle for an even count), with its CPU."""
    ordered = sorted(runs, key=lambda run: run[key])
    middle = ordered[(len(ordered) - 1) // 2]
    return middle | {"runs": [run[key] for run in runs], "spread": _spread(runs, key)}


def _spread(runs: list[dict[str, Any]], key: str) -> float:
    values = [run[key] for run in runs]
    return round(statistics.pstdev(values) / statistics.mean(values), 3) if len(values) > 1 else 0.0


async def run_inner(plan: dict[str, Any]) -> dict[str, Any]:
    hosts = Hosts(
        workers=plan["worker_hosts"],
        api=plan["api"],
        api_address=plan["api_address"],
        redis_pid=plan["redis_pid"],
        postgres_pid=plan["postgres_pid"],
    )
    redis_url, admin_url = plan["redis_url"], plan["database_url"]
    if plan["redis"] != ["single"]:
        from bench.scaling_setups import drain_setups

        return {"setups": await drain_setups(hosts, plan)}
    drain = []
    for count in plan["workers"]:
        point = Hosts(hosts.workers[:count], hosts.api, hosts.api_address, hosts.redis_pid,
                      hosts.postgres_pid)  # fmt: skip
        runs = [
            await scaling_points.drain(point, redis_url, admin_url, plan["jobs"])
            for _ in range(plan["runs"])
        ]
        drain.append({"workers": count} | median(runs, "rate"))
    accept = []
    for count in plan["apis"]:
        runs = await scaling_points.accept(hosts, redis_url, admin_url, count, plan)
        accept.append({"processes": count} | median(runs, "rps"))
    return {"drain": drain, "accept": accept}
