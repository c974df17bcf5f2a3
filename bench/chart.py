"""docs/benchmarks.png: one panel per section measured, Pulse beside its peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

SHORT = {
    "pulse": "Pulse", "arq": "arq", "dramatiq": "Dramatiq", "saq": "SAQ", "celery": "Celery",
    "bare_one": "bare XADD", "bare_pipelined": "bare XADD\npipelined",
    "pulse_results_off": "Pulse\nresults off",
    "pulse_notifications": "Pulse\nnotifications",
}  # fmt: skip
PULSE, PEER = "#2a7ab0", "#b0b0b0"


def _bars(axes: Axes, figures: dict[str, Any], key: str, title: str, unit: str) -> None:
    names = list(figures)
    values = [figures[name][key] for name in names]
    colours = [PULSE if name == "pulse" else PEER for name in names]
    bars = axes.bar([SHORT[name] for name in names], values, color=colours)
    axes.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(unit)


def _latency(axes: Axes, figures: dict[str, Any]) -> None:
    names = list(figures)
    positions = range(len(names))
    p50 = [figures[name]["p50_ms"] for name in names]
    p99 = [figures[name]["p99_ms"] for name in names]
    axes.bar([p - 0.2 for p in positions], p50, width=0.4, label="p50", color=PULSE)
    axes.bar([p + 0.2 for p in positions], p99, width=0.4, label="p99", color=PEER)
    axes.set_xticks(list(positions), [SHORT[name] for name in names])
    axes.set_title("Enqueue → start at 200/s (lower is better)", fontsize=10)
    axes.set_ylabel("ms")
    axes.legend(fontsize=8)


def draw(results: dict[str, Any], path: Path) -> None:
    panels = [section for section in ("drain", "accept", "latency") if section in results]
    if not panels:
        return
    figure = Figure(figsize=(5 * len(panels), 4))  # no pyplot: no GUI backend, no global state
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, section in zip(axes[0], panels, strict=True):
        if section == "drain":
            _bars(ax, results["drain"], "rate", "Drain, one worker process", "jobs/s")
        elif section == "accept":
            _bars(ax, results["accept"], "rps", "Accept, one process, 64 connections", "req/s")
        else:
            _latency(ax, results["latency"])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
