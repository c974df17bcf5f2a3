"""docs/scaling.md (the generated part, between its markers) and docs/scaling.png from the
figures of bench/scaling.py, with the ceiling each curve ran into, read from CPU use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"
SATURATED = 85.0  # percent of a resource's capacity taken as "at its ceiling"
CONTENDED = 0.8  # the run's share of the machine's busy time under which others distorted it
GROUPS = ("redis", "postgres", "pulse")
COLOURS = {"redis": "#c0392b", "postgres": "#2a7ab0", "pulse": "#27ae60", "ideal": "#b0b0b0"}

TEMPLATE = f"""# Scaling across simulated hosts

`make scaling` (as root: `sudo .venv/bin/python -m bench.scaling`) runs both curves below on hosts
simulated with Linux network namespaces, and rewrites the part of this page between the markers.

{BEGIN}
{END}
"""


def _cpu_cells(cpu: dict[str, float]) -> str:
    return " | ".join(f"{cpu[group]:.0f}" for group in (*GROUPS, "load", "machine"))


def drain_table(points: list[dict[str, Any]]) -> list[str]:
    one = points[0]["rate"] / points[0]["workers"]
    lines = [
        "| worker processes | drained/s (median) | per-process vs 1 | runs (/s) "
        "| redis-server % | PostgreSQL % | Pulse % | load % | machine % |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        runs = ", ".join(f"{r:,.0f}" for r in p["runs"])
        scale = p["rate"] / p["workers"] / one
        lines.append(f"| {p['workers']} | {p['rate']:,.0f} | {scale:.2f} | {runs} "
                     f"| {_cpu_cells(p['cpu'])} |")  # fmt: skip
    return lines


def accept_table(points: list[dict[str, Any]]) -> list[str]:
    one = points[0]["rps"] / points[0]["processes"]
    lines = [
        "| API processes | accepted/s (median) | per-process vs 1 | connections | p50 ms "
        "| p99 ms | errors | redis-server % | PostgreSQL % | Pulse % | load % | machine % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        bound = "" if p["within_bound"] else " (over the bound)"
        scale = p["rps"] / p["processes"] / one
        lines.append(
            f"| {p['processes']} | {p['rps']:,.0f} | {scale:.2f} | {p['connections']} "
            f"| {p['p50_ms']:.1f} | {p['p99_ms']:.1f}{bound} | {p['errors']} "
            f"| {_cpu_cells(p['cpu'])} |"
        )
    return lines


def ceiling(
    point: dict[str, Any], rate: float, cpus: int, what: str, redis: str = "Redis (one thread)"
) -> list[str]:
    """Where this point's ceiling is, and what the per-item CPU costs predict beyond it
    (``redis`` names what the Redis figure is: a cluster's is every master's on one thread)."""
    cpu = point["cpu"]
    cost = {group: cpu[group] / 100 / rate * 1000 for group in GROUPS}  # core-ms per item
    ours = sum(cpu[group] for group in (*GROUPS, "load")) / cpus
    if cpu["machine"] >= SATURATED:
        verdict = (f"the machine's {cpus} cores were {cpu['machine']:.0f}% busy ({ours:.0f}% "
                   "by this run's servers, Pulse and load): the CPU of this machine is the "
                   "ceiling")  # fmt: skip
        if ours < cpu["machine"] * CONTENDED:
            verdict += (f", and other processes took the other {cpu['machine'] - ours:.0f}%: the "
                        "rates understate what the machine gives Pulse alone, the CPU per item "
                        "below holds")  # fmt: skip
    elif cpu["redis"] >= SATURATED:
        verdict = f"redis-server used {cpu['redis']:.0f}% of its one core: Redis is the ceiling"
    else:
        top = max(GROUPS, key=lambda group: cpu[group])
        verdict = (f"no resource was saturated (machine {cpu['machine']:.0f}% busy; the largest "
                   f"user was {top} at {cpu[top]:.0f}% of a core)")  # fmt: skip
    names = {"redis": redis, "postgres": "PostgreSQL per core",
             "pulse": "Pulse per core"}  # fmt: skip
    costs = ", ".join(f"{group} {cost[group]:.3f}" for group in GROUPS)
    limits = ", ".join(
        f"{names[group]} ≈ {1000 / cost[group]:,.0f}/s" for group in GROUPS if cost[group] > 0
    )
    whole = cpus * 1000 / sum(cpu[group] / 100 / rate * 1000 for group in (*GROUPS, "load"))
    return [
        f"- **{what}**: {verdict}. CPU per item (core-ms): {costs}. "
        f"Upper bounds these costs predict (CPU alone; waits such as fsync and round trips not "
        f"counted): {limits}; all parts on this machine's {cpus} cores with nothing else "
        f"running ≈ {whole:,.0f}/s.",
    ]


def growth(points: list[dict[str, Any]], count: str, rate: str, what: str) -> list[str]:
    """How much the last step of a curve gained, beside what linear scaling would give."""
    if len(points) < 2:
        return []
    low, high = points[-2], points[-1]
    return [
        f"- **{what}** {low[count]} → {high[count]}: the rate changed "
        f"by a factor of {high[rate] / low[rate]:.2f} (linear: {high[count] / low[count]:.2f})."
    ]


def _prediction(result: dict[str, Any]) -> list[str]:
    cpus = int(result["machine"]["cpus"])
    lines = growth(result["drain"], "workers", "rate", "Drain, worker processes")
    lines += growth(result["accept"], "processes", "rps", "Accept, API processes")
    drain, accept = result["drain"][-1], result["accept"][-1]
    lines += ceiling(drain, drain["rate"], cpus, f"Drain at {drain['workers']} worker processes")
    lines += ceiling(accept, accept["rps"], cpus, f"Accept at {accept['processes']} API processes")
    return lines


def generated(result: dict[str, Any]) -> str:
    plan, machine = result["plan"], result["machine"]
    head = [
        f"Measured {result['measured_at']} on {machine['cpus']} cores ({machine['cpu_model']}, "
        f"Linux {machine['kernel']}, load average {machine['load_average']:.1f} at the start), "
        f"mode `{plan['mode']}`: {plan['runs']} run(s) per point, "
        f"{plan['jobs']:,} notifications per drain, accept p99 bound {plan['p99_ms']:.0f} ms, "
        f"hosts on {result['subnet']}. CPU columns: percent of one core over the timed window "
        "(machine: percent of all cores, other processes on the machine included).",
        "",
        "### Drain (log channel, state persisted), worker processes on 1 host each",
        "",
        *drain_table(result["drain"]),
        "",
        "### Accept (`POST /api/notifications/`), one wrk per API process",
        "",
        *accept_table(result["accept"]),
        "",
        "### Ceilings",
        "",
        *_prediction(result),
        "",
        "![scaling curves](scaling.png)",
    ]
    return "\n".join(head)


def _curve(axes: Axes, counts: list[int], rates: list[float], title: str, unit: str) -> None:
    ideal = [rates[0] * count / counts[0] for count in counts]
    axes.plot(counts, ideal, "--", color=COLOURS["ideal"], label="linear from 1")
    axes.plot(counts, rates, "o-", color=COLOURS["pulse"], label="measured (median)")
    axes.set_xticks(counts)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)


def _cpu(axes: Axes, counts: list[int], points: list[dict[str, Any]], xlabel: str) -> None:
    width = 0.8 / len(GROUPS)
    for i, group in enumerate(GROUPS):
        offsets = [n + (i - 1) * width for n in range(len(counts))]
        values = [p["cpu"][group] for p in points]
        axes.bar(offsets, values, width=width * 0.9, color=COLOURS[group], label=group)
    axes.set_xticks(range(len(counts)), [str(n) for n in counts])
    axes.set_title("CPU used in the timed window (median run)", fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("% of one core")
    axes.legend(fontsize=8)


def draw(result: dict[str, Any], path: Path) -> None:
    figure = Figure(figsize=(10, 7))  # no pyplot: no GUI backend, no global state
    (drain_rate, accept_rate), (drain_cpu, accept_cpu) = figure.subplots(2, 2)
    workers = [p["workers"] for p in result["drain"]]
    apis = [p["processes"] for p in result["accept"]]
    _curve(drain_rate, workers, [p["rate"] for p in result["drain"]], "Drain", "notifications/s")
    _curve(accept_rate, apis, [p["rps"] for p in result["accept"]], "Accept", "requests/s")
    _cpu(drain_cpu, workers, result["drain"], "worker processes")
    _cpu(accept_cpu, apis, result["accept"], "API processes")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_between(
    page: Path, markers: tuple[str, str], body: str, missing: Callable[[str], str]
) -> None:
    """``body`` between the page's two markers; ``missing(text)`` when a marker is absent
    gives the text to use instead (the template, or the page with the section appended)."""
    begin, end = markers
    text = page.read_text() if page.exists() else TEMPLATE
    if begin not in text or end not in text:
        text = missing(text)
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    page.write_text(f"{before}{begin}\n{body}\n{end}{after}")


def write(result: dict[str, Any], docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    write_between(docs / "scaling.md", (BEGIN, END), generated(result), lambda _: TEMPLATE)
    draw(result, docs / "scaling.png")
