"""Scaling curves across simulated hosts: ``python -m bench.scaling`` (``make scaling``), as root.

Network namespaces stand for hosts (bench/netns.py): ``db`` (its own redis-server and PostgreSQL),
``api`` (``pulse api`` processes), ``w1``..``wN`` (one worker process each) and ``load`` (the
harness and wrk), on a private /24 behind a bridge in a namespace of its own. Curves: drain rate
for 1 → 2 → 4 worker processes, accept rate within a p99 bound for 1 → 2 → 4 API processes; each
point the median of 3 runs, with the CPU that redis-server, PostgreSQL and Pulse used. Writes
docs/scaling.md (the table between its markers) and docs/scaling.png. ``--quick``: 1 run, small
N, points 1 and 2 (the system test). ``--cleanup``: remove what a crashed run left.
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.sandbox_servers import db_host, remove_leftover_folders

QUICK: dict[str, Any] = {
    "jobs": 1000, "runs": 1, "seconds": 2.0, "connections": [8], "points": [1, 2],
}  # fmt: skip
FULL: dict[str, Any] = {
    "jobs": 10_000, "runs": 3, "seconds": 5.0, "connections": [4, 16, 64], "points": [1, 2, 4],
}  # fmt: skip
P99_BOUND_MS = 250
INNER_TIMEOUT_S = {"quick": 900, "full": 3600}
MAX_POINT = 8


def point_list(text: str) -> list[int]:
    """``1,2,4`` as process counts, sorted; each from 1 to ``MAX_POINT``."""
    try:
        points = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts like 1,2,4") from None
    if points[0] < 1 or points[-1] > MAX_POINT:
        raise argparse.ArgumentTypeError(f"process counts go from 1 to {MAX_POINT}")
    return points


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
        "apis": args.apis or base["points"],
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so SIGTERM also unwinds through every finally


def measure(plan: dict[str, Any]) -> dict[str, Any]:
    """Sandbox, servers, then the load host's half; everything removed on the way out."""
    nodes = ["db", "api", "load", *[f"w{i + 1}" for i in range(max(plan["workers"]))]]
    with netns.sandbox(nodes) as box, db_host(box.exec("db"), box.address("db")) as db:
        plan |= {
            "redis_url": db.redis_url, "database_url": db.database_url,
            "redis_pid": db.redis_pid, "postgres_pid": db.postgres_pid,
            "api": box.exec("api"), "api_address": box.address("api"),
            "worker_hosts": [box.exec(f"w{i + 1}") for i in range(max(plan["workers"]))],
        }  # fmt: skip
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
    from bench.scaling_report import write

    write(result, args.docs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
