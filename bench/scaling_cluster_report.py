"""The Redis Cluster part of docs/scaling.md (between its own markers) and
docs/scaling-cluster.png, from a ``--redis`` run of bench/scaling.py: a drain table per setup,
with redis-server's CPU summed over the masters and given per master (the spread), and where each
setup's ceiling is. The single-Redis section of the page is left as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.scaling_report import COLOURS, SATURATED, ceiling, write_between

BEGIN, END = "<!-- scaling-cluster:begin -->", "<!-- scaling-cluster:end -->"
CHART = "scaling-cluster.png"
SECTION = f"\n## Redis Cluster across simulated hosts\n\n{BEGIN}\n{END}\n"
SETUP_COLOURS = ("#7f8c8d", "#8e44ad", "#d35400")
MASTER_SHADES = ("#c0392b", "#e67e22", "#f1c40f")


def _masters(point: dict[str, Any]) -> dict[str, float]:
    """redis-server's CPU per master host (``redis@r1`` groups), in host order."""
    cpu = point["cpu"]
    return {key.split("@", 1)[1]: cpu[key] for key in sorted(cpu) if key.startswith("redis@")}


def _spread_text(held: dict[str, list[int]]) -> str:
    return ", ".join(f"{host} {numbers}" for host, numbers in held.items()) or "-"


def setup_table(setup: dict[str, Any]) -> list[str]:
    lines = [
        "| worker processes | drained/s (median) | vs one Redis (same run) | runs (/s) "
        "| redis-server % (all masters) | per master % | PostgreSQL % | Pulse % | load % "
        "| machine % |",
        "|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for p in setup["drain"]:
        cpu = p["cpu"]
        runs = ", ".join(f"{r:,.0f}" for r in p["runs"])
        ratio = "-" if p["ratio"] is None else f"{p['ratio']:.2f}x"
        each = ", ".join(f"{host} {value:.0f}" for host, value in _masters(p).items()) or "-"
        lines.append(
            f"| {p['workers']} | {p['rate']:,.0f} | {ratio} | {runs} | {cpu['redis']:.0f} "
            f"| {each} | {cpu['postgres']:.0f} | {cpu['pulse']:.0f} | {cpu['load']:.0f} "
            f"| {cpu['machine']:.0f} |"
        )
    return lines


def _busiest(setup: dict[str, Any], cpus: int) -> list[str]:
    """The busiest master at the last point: what bounds a cluster's Redis side."""
    point = setup["drain"][-1]
    masters = _masters(point)
    if not masters:
        return []
    host = max(masters, key=lambda name: masters[name])
    share = masters[host]
    verdict = "at its ceiling" if share >= SATURATED else "far from its ceiling"
    bound = f"; with this spread the cluster's Redis side ≈ {point['rate'] * 100 / share:,.0f}/s"
    return [
        f"  The busiest master, {host}, used {share:.0f}% of its one core ({verdict}"
        f"{bound if share > 0 else ''}): on {cpus} cores shared by every host, the masters "
        "add processes, not CPU."
    ]


def _ceilings(result: dict[str, Any]) -> list[str]:
    cpus = int(result["machine"]["cpus"])
    lines = []
    for setup in result["setups"]:
        point = setup["drain"][-1]
        what = f"{setup['label']}, {point['workers']} worker processes"
        redis = (
            "Redis (all masters' work on one thread)"
            if setup["addresses"]
            else "Redis (one thread)"
        )
        lines += ceiling(point, point["rate"], cpus, what, redis)
        lines += _busiest(setup, cpus)
    return lines


def generated(result: dict[str, Any]) -> str:
    plan, machine = result["plan"], result["machine"]
    clusters = [setup for setup in result["setups"] if setup["partitions_on"]]
    spreads = "; ".join(
        f"{setup['label']}: {_spread_text(setup['partitions_on'])}" for setup in clusters
    )
    lines = [
        f"Measured {result['measured_at']} on {machine['cpus']} cores ({machine['cpu_model']}, "
        f"Linux {machine['kernel']}, load average {machine['load_average']:.1f} at the start), "
        f"mode `{plan['mode']}`: {plan['runs']} run(s) per point, {plan['jobs']:,} notifications "
        f"per drain, setups interleaved within each run, hosts on {result['subnet']}. Ratios: "
        "against one Redis in the same run at the same worker count (median of the runs' "
        "ratios). CPU columns: percent of one core over the timed window (machine: percent of "
        "all cores, other processes on the machine included).",
        "",
        f"Partitions per master (first run; every run's prefix spreads them evenly): {spreads}."
        if clusters
        else "",
    ]
    for setup in result["setups"]:
        lines += ["", f"### Drain on {setup['label']}", "", *setup_table(setup)]
    lines += ["", "### Ceilings (cluster run)", "", *_ceilings(result), "", f"![drain per Redis "
              f"setup]({CHART})"]  # fmt: skip
    return "\n".join(lines)


def _rates(axes: Axes, result: dict[str, Any]) -> None:
    for colour, setup in zip(SETUP_COLOURS, result["setups"], strict=False):
        counts = [p["workers"] for p in setup["drain"]]
        axes.plot(counts, [p["rate"] for p in setup["drain"]], "o-", color=colour,
                  label=setup["label"])  # fmt: skip
        axes.set_xticks(counts)
    axes.set_title("Drain (median of runs)", fontsize=10)
    axes.set_xlabel("worker processes")
    axes.set_ylabel("notifications/s")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)


def _cpu(axes: Axes, result: dict[str, Any]) -> None:
    """Per setup and worker count: redis-server stacked by master, PostgreSQL, Pulse."""
    names, position = [], 0.0
    for setup in result["setups"]:
        for p in setup["drain"]:
            masters = _masters(p) or {"db": p["cpu"]["redis"]}
            bottom = 0.0
            for shade, value in zip(MASTER_SHADES, masters.values(), strict=False):
                axes.bar(position - 0.27, value, 0.25, bottom=bottom, color=shade)
                bottom += value
            axes.bar(position, p["cpu"]["postgres"], 0.25, color=COLOURS["postgres"])
            axes.bar(position + 0.27, p["cpu"]["pulse"], 0.25, color=COLOURS["pulse"])
            names.append(f"{setup['name']}\n{p['workers']}w")
            position += 1
    axes.set_xticks(range(len(names)), names, fontsize=7)
    axes.set_title("CPU, % of one core (redis-server stacked per master)", fontsize=10)
    handles = [axes.bar(0, 0, color=c)[0] for c in (MASTER_SHADES[0], COLOURS["postgres"],
                                                   COLOURS["pulse"])]  # fmt: skip
    axes.legend(handles, ["redis-server", "PostgreSQL", "Pulse"], fontsize=7)


def draw(result: dict[str, Any], path: Path) -> None:
    figure = Figure(figsize=(12, 4.5))
    rates, cpu = figure.subplots(1, 2, width_ratios=[1, 2])
    _rates(rates, result)
    _cpu(cpu, result)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write(result: dict[str, Any], docs: Path) -> None:
    """Between this section's markers (appended to the page if it has none yet)."""
    docs.mkdir(parents=True, exist_ok=True)
    write_between(
        docs / "scaling.md", (BEGIN, END), generated(result),
        lambda text: text.rstrip("\n") + "\n" + SECTION,
    )  # fmt: skip
    draw(result, docs / CHART)
