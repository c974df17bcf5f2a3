"""Scaling curves across simulated hosts: ``python -m bench.scaling`` (``make scaling``), as root.

Network namespaces stand for hosts (bench/netns.py): ``db`` (its own redis-server and PostgreSQL),
``api`` (``pulse api`` processes), ``w1``..``wN`` (one worker process each) and ``load`` (the
harness and wrk), on a private /24 behind a bridge in a namespace of its own. Curves: drain rate
for 1 → 2 → 4 worker processes, accept rate within a p99 bound for 1 → 2 → 4 API processes; each
point the median of 3 runs, with the CPU that redis-server, PostgreSQL and Pulse used. Writes
docs/scaling.md (the table between its markers) and docs/scaling.png. ``--quick``: 1 run, small
N, points 1 and 2 (the system test). ``--cleanup``: remove what a crashed run left.

``--redis single,cluster1,cluster3``: the drain curve alone, on one Redis and on Redis Clusters
of 1 and 3 masters on hosts of their own (``r1``..``r3``, bench/sandbox_cluster.py), the queue
split into ``--partitions`` (bench/scaling_setups.py); written to its own section of
docs/scaling.md and docs/scaling-cluster.png (bench/scaling_cluster_report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import netns
from bench.processes import ROOT
from bench.sandbox_cluster import Master, sandbox_cluster
from bench.sandbox_servers import db_host, remove_leftover_folders
from bench.scaling_setups import PORTS, SETUP_HOSTS, label

QUICK: dict[str, Any] = {
    "jobs": 1000, "runs": 1, "seconds": 2.0, "connections": [8], "points": [1, 2],
}  # fmt: skip
FULL: dict[str, Any] = {
    "jobs": 10_000, "runs": 3, "seconds": 5.0, "connections": [4, 16, 64], "points": [1, 2, 4],
}  # fmt: skip
P99_BOUND_MS = 250
INNER_TIMEOUT_S = {"quick": 900, "full": 3600}
MAX_POINT = 8
PARTITIONS = 6  # a cluster setup's PULSE_REDIS_PARTITIONS: two per master of three


def point_list(text: str) -> list[int]:
    """``1,2,4`` as process counts, sorted; each from 1 to ``MAX_POINT``."""
    try:
        points = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts like 1,2,4") from None
    if points[0] < 1 or points[-1] > MAX_POINT:
        raise argparse.ArgumentTypeError(f"process counts go from 1 to {MAX_POINT}")
    return points


def redis_setups(text: str) -> list[str]:
    """``single,cluster3`` as setup names, in the order they drain (one Redis first)."""
    names = {part.strip() for part in text.split(",")}
    unknown = names - SETUP_HOSTS.keys()
    if unknown or not names:
        known = ", ".join(SETUP_HOSTS)
        raise argparse.ArgumentTypeError(f"{text!r}: setups are a list of {known}")
    return [name for name in SETUP_HOSTS if name in names]


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 run, small N, points 1 and 2")
    parser.add_argument("--workers", type=point_list, help="worker process counts, e.g. 1,2,4")
    parser.add_argument("--apis", type=point_list, help="API process counts, e.g. 1,2,4")
    parser.add_argument("--jobs", type=positive, help="notifications drained per run")
    parser.add_argument(
        "--redis", type=redis_setups, default=["single"],
        help="Redis setups of the drain curve: single (default: both curves, as always), "
        "cluster1, cluster3; any cluster: the drain curve alone, in its own section",
    )  # fmt: skip
    parser.add_argument(
        "--partitions", type=positive, default=PARTITIONS,
        help=f"a cluster setup's PULSE_REDIS_PARTITIONS (default {PARTITIONS})",
    )  # fmt: skip
    parser.add_argument("--p99-ms", type=positive, default=P99_BOUND_MS, help="accept p99 bound")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where scaling.md goes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--cleanup", action="store_true", help="remove a crashed run's leftovers")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)  # the load host's half
    return parser


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else FULL
    return {
        "mode": "quick" if args.quick else "full",
        "jobs": args.jobs or base["jobs"],
        "runs": base["runs"],
        "seconds": base["seconds"],
        "connections": base["connections"],
        "p99_ms": args.p99_ms,
        "workers": args.workers or base["points"],
        "apis": [] if clustered(args.redis) else args.apis or base["points"],
        "redis": args.redis,
        "partitions": args.partitions,
    }


def clustered(setups: list[str]) -> bool:
    return setups != ["single"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so SIGTERM also unwinds through every finally


def measure(plan: dict[str, Any]) -> dict[str, Any]:
    """Sandbox, servers, then the load host's half; everything removed on the way out."""
    redis_hosts = sorted({host for name in plan["redis"] for host in SETUP_HOSTS[name]})
    nodes = ["db", "api", "load", *[f"w{i + 1}" for i in range(max(plan["workers"]))]]
    with (
        netns.sandbox([*nodes, *redis_hosts]) as box,
        db_host(box.exec("db"), box.address("db")) as db,
        contextlib.ExitStack() as clusters,
    ):
        plan |= {
            "redis_url": db.redis_url, "database_url": db.database_url,
            "redis_pid": db.redis_pid, "postgres_pid": db.postgres_pid,
            "api": box.exec("api"), "api_address": box.address("api"),
            "worker_hosts": [box.exec(f"w{i + 1}") for i in range(max(plan["workers"]))],
        }  # fmt: skip
        if clustered(plan["redis"]):
            plan["setups"] = [_setup(box, name, plan, clusters) for name in plan["redis"]]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            json.dump(plan, file)
            file.flush()
            inner = [sys.executable, "-m", "bench.scaling", "--inner", file.name]
            command = [*box.exec("load"), *inner]
            env = os.environ | {"PYTHONPATH": str(ROOT)}
            done = subprocess.run(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, check=True,
                timeout=INNER_TIMEOUT_S[plan["mode"]], text=True,
            )  # fmt: skip
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        figures["namespaces"] = box.all_names()
        figures["subnet"] = f"{box.subnet}.0/24"
    return figures


def _setup(
    box: netns.Sandbox, name: str, plan: dict[str, Any], stack: contextlib.ExitStack
) -> dict[str, Any]:
    """One Redis setup of the drain curve, its servers started (a cluster's kept by ``stack``)."""
    if name == "single":
        return {"name": name, "label": label(name, 1), "url": plan["redis_url"],
                "cluster": False, "partitions": 1, "masters": {}, "addresses": {}}  # fmt: skip
    masters = [Master(host, box.exec(host), box.address(host)) for host in SETUP_HOSTS[name]]
    cluster = stack.enter_context(sandbox_cluster(masters, PORTS[name]))
    partitions = plan["partitions"]
    return {"name": name, "label": label(name, partitions), "url": cluster.url, "cluster": True,
            "partitions": partitions, "masters": cluster.pids,
            "addresses": cluster.addresses}  # fmt: skip


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "load_average": os.getloadavg()[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.inner:
        from bench.scaling_inner import run_inner

        print(json.dumps(asyncio.run(run_inner(json.loads(args.inner.read_text())))))
        return 0
    removed = netns.remove_leftovers() + remove_leftover_folders(netns.alive)
    if args.cleanup:
        print("removed: " + (", ".join(removed) or "nothing"))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    plan = _plan(args)
    before = machine()  # the load average before the run adds its own
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    figures = measure(dict(plan))
    result = {"plan": plan, "machine": before, "measured_at": started, **figures}
    if clustered(plan["redis"]):
        from bench.scaling_cluster_report import write
    else:
        from bench.scaling_report import write

    write(result, args.docs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
