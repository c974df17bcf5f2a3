"""The generated part of docs/benchmarks.md (between the markers; the hand-written notes
around it are kept) and the chart docs/benchmarks.png."""

from __future__ import annotations

import contextlib
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.servers import Servers

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NAMES = {
    "pulse": "Pulse", "arq": "arq", "dramatiq": "Dramatiq", "saq": "SAQ", "celery": "Celery",
    "bare_one": "bare aiohttp + uvloop, one XADD per request",
    "bare_pipelined": "bare aiohttp + uvloop, XADDs in flight pipelined",
    "pulse_results_off": "Pulse, results off",
    "pulse_notifications": "Pulse, notifications (log channel)",
}  # fmt: skip
WHAT = {
    "pulse": "log channel, all state in PostgreSQL",
    "arq": "no-op; nothing persisted",
    "dramatiq": "no-op; nothing persisted",
    "saq": "no-op; SAQ's job record",
    "celery": "no-op; results ignored",
    "pulse_results_off": "no-op task; status in PostgreSQL, no result row",
    "pulse_notifications": "log channel, all state in PostgreSQL",
}
TASK_WHAT = "no-op task; status and result row in PostgreSQL"


def command(args: list[str]) -> str:
    return "make bench" + (f' BENCH_ARGS="{" ".join(args)}"' if args else "")


async def machine(found: Servers) -> dict[str, str]:
    redis: Redis = Redis.from_url(found.redis_url)
    try:
        redis_version = str((await redis.info("server"))["redis_version"])
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(found.database_url)
    try:
        pg_version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return {
        "cpu": _cpu(), "cores": str(os.cpu_count()), "python": platform.python_version(),
        "redis": redis_version, "postgres": pg_version, "servers": found.origin,
    }  # fmt: skip


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def drain_table(figures: dict[str, Any]) -> list[str]:
    pulse = figures["pulse"]["rate"]
    lines = [
        "| peer | version | what a job does | jobs/s | Pulse / peer |",
        "|---|---|---|---|---|",
    ]
    for name, found in figures.items():
        ratio = "" if name == "pulse" else _ratio(pulse, found["rate"])
        version = found.get("version", "this tree")
        lines.append(
            f"| {NAMES[name]} | {version} | {WHAT[name]} | {found['rate']:,.0f} | {ratio} |"
        )
    cpu = figures["pulse"].get("cpu_us_per_job")
    if cpu is not None:  # the figure that holds when other processes load the machine
        lines.append(f"\nPulse worker process CPU per notification: {cpu:.0f} µs.")
    return lines


def tasks_table(figures: dict[str, Any]) -> list[str]:
    """The task drain: Pulse's "pulse" figure is the no-op task with its result kept."""
    kept = figures["pulse"]["rate"]
    lines = [
        "| system | version | what a job does | jobs/s | Pulse (results kept) / it |",
        "|---|---|---|---|---|",
    ]
    for name, found in figures.items():
        label = "Pulse, results kept" if name == "pulse" else NAMES[name]
        what = TASK_WHAT if name == "pulse" else WHAT[name]
        ratio = "" if name == "pulse" else _ratio(kept, found["rate"])
        version = found.get("version", "this tree")
        lines.append(f"| {label} | {version} | {what} | {found['rate']:,.0f} | {ratio} |")
    notifications = figures.get("pulse_notifications")
    if notifications is not None:  # the target: the task path as fast as the notification path
        off = figures["pulse_results_off"]
        lines.append(
            f"\nTasks / notifications, same run: results kept"
            f" {_ratio(kept, notifications['rate'])}, results off"
            f" {_ratio(off['rate'], notifications['rate'])} (jobs/s); worker CPU per job:"
            f" {figures['pulse']['cpu_us_per_job']:.0f} µs kept,"
            f" {off['cpu_us_per_job']:.0f} µs off,"
            f" {notifications['cpu_us_per_job']:.0f} µs per notification."
        )
    return lines


def accept_table(figures: dict[str, Any]) -> list[str]:
    pulse = figures["pulse"]["rps"]
    lines = [
        "| endpoint (one process, wrk 64 connections) | req/s | p50 ms | p99 ms | non-2xx"
        " | Pulse / it |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("pulse", "bare_one", "bare_pipelined"):
        found = figures[name]
        ratio = "" if name == "pulse" else _ratio(pulse, found["rps"])
        label = "Pulse `POST /api/notifications/`" if name == "pulse" else NAMES[name]
        lines.append(
            f"| {label} | {found['rps']:,.0f} | {found['p50_ms']:.1f} | {found['p99_ms']:.1f}"
            f" | {found['non_2xx']:.0f} | {ratio} |"
        )
    return lines


def latency_table(figures: dict[str, Any]) -> list[str]:
    lines = ["| system | enqueue → start p50 ms | p99 ms |", "|---|---|---|"]
    for name, found in figures.items():
        lines.append(f"| {NAMES[name]} | {found['p50_ms']:.1f} | {found['p99_ms']:.1f} |")
    pulse = figures["pulse"]
    lines.append(
        f"\nPulse's POST answer at the same rate: p50 {pulse['answer_p50_ms']:.1f} ms,"
        f" p99 {pulse['answer_p99_ms']:.1f} ms."
    )
    if "answered_to_started_p50_ms" in pulse:  # the worker's share, the API's apart
        lines.append(
            f"From the 202 reaching the client to the attempt's start: p50"
            f" {pulse['answered_to_started_p50_ms']:.1f} ms,"
            f" p99 {pulse['answered_to_started_p99_ms']:.1f} ms."
        )
    return lines


def memory_table(figures: dict[str, Any]) -> list[str]:
    found = figures["pulse"]
    mib = 1024 * 1024
    return [
        "| Redis used_memory | MiB |",
        "|---|---|",
        f"| before | {found['before'] / mib:.1f} |",
        f"| with {found['pending']:,.0f} pending notifications"
        f" | {found['with_pending'] / mib:.1f} |",
        f"| after one worker drained them | {found['after_drain'] / mib:.1f} |",
        f"\n{found['bytes_per_pending']:.0f} bytes of Redis per pending notification.",
    ]


TITLES = {
    "drain": ("Drain: one worker process empties a queue", drain_table),
    "accept": ("Accept: requests/s at 64 connections", accept_table),
    "latency": ("Latency: enqueue → first attempt started, open loop", latency_table),
    "memory": ("Redis memory", memory_table),
    "tasks": ("Tasks: one worker process drains no-op tasks (peers: no-op jobs)", tasks_table),
    "task_latency": ("Task latency: enqueue → task started, open loop", latency_table),
}


def tables(results: dict[str, Any], runs: int) -> str:
    parts = []
    for section, figures in results.items():
        title, table = TITLES[section]
        parts += [f"### {title}", "", *table(figures), ""]
    return "\n".join(parts)


def generated(
    results: dict[str, Any], facts: dict[str, str], cmd: str, *, quick: bool, runs: int
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    warning = "\n**A quick run (small counts, one run): not figures to quote.**\n" if quick else ""
    return "\n".join([
        BEGIN,
        "## Last run (generated by `make bench`; edit outside the markers)",
        warning,
        f"Command: `{cmd}`, {now}. Each figure is the median of {runs} interleaved run(s).",
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']},"
        f" Redis {facts['redis']}, PostgreSQL {facts['postgres']} ({facts['servers']}).",
        "",
        tables(results, runs),
        "![Pulse and its peers, same run](benchmarks.png)",
        END,
    ])  # fmt: skip


def splice(existing: str, block: str) -> str:
    """Replace the generated part; without markers, put it after the title, notes kept."""
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    title, _, notes = existing.partition("\n")
    return f"{title}\n\n{block}\n\n{notes.lstrip()}" if existing else f"# Benchmarks\n\n{block}\n"


def write(
    results: dict[str, Any], facts: dict[str, str], cmd: str, *, quick: bool, runs: int
) -> None:
    existing = REPORT.read_text() if REPORT.exists() else ""
    REPORT.write_text(splice(existing, generated(results, facts, cmd, quick=quick, runs=runs)))
    from bench.chart import draw

    draw(results, CHART)
