"""`make bench`: Pulse side by side with its peers, in one run, on the same servers.

Sections (``--only`` picks some): drain (one worker process empties a queue: Pulse vs arq,
Dramatiq, SAQ, Celery), accept (wrk at 64 connections: Pulse's POST vs a bare aiohttp + XADD
endpoint), latency (enqueue → start at a steady 200/s: Pulse vs SAQ, Dramatiq), memory (Redis
with N pending notifications and after the drain), tasks (one worker process drains no-op
tasks, results kept and off, beside its notification drain and the peers' no-op jobs),
task_latency (enqueue → task started at 200/s, beside SAQ and Dramatiq). Each figure is the
median of 3 runs, interleaved (peer A, Pulse, peer B, Pulse, ...). Writes the generated part of
docs/benchmarks.md and docs/benchmarks.png unless ``--no-report``.

Servers: bench/servers.py (TCP loopback; PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL to
use given ones). Peers run from virtual environments of their own (bench/peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvloop

from bench import accept, latency, memory, peers, pulse_drain, report, tasks_drain
from bench.servers import Servers, servers

SECTIONS = ("drain", "accept", "latency", "memory", "tasks", "task_latency")
Measure = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    runs: int = 3
    jobs: int = 20_000
    accept_s: float = 10.0
    rate: float = 200.0
    latency_s: float = 10.0
    pending: int = 100_000


QUICK = Plan(runs=1, jobs=300, accept_s=1.0, latency_s=2.0, pending=1000)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.jobs is not None:
        plan = dataclasses.replace(plan, jobs=args.jobs)
    only = [s for s in SECTIONS if s in args.only.split(",")] if args.only else list(SECTIONS)
    with servers() as found, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        bench = Bench(found, plan, runner.run)
        results = {section: getattr(bench, section)() for section in only}
        machine = runner.run(report.machine(found))
    text = report.tables(results, plan.runs)
    print(text)
    if not args.no_report:
        command = report.command(sys.argv[1:] if argv is None else argv)
        report.write(results, machine, command, quick=args.quick, runs=plan.runs)
        print(f"written to {report.REPORT.name} and {report.CHART.name} in docs/")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one run (smoke)")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--no-report", action="store_true", help="print, write nothing")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 20,000; quick 300)")
    return parser


class Bench:
    """The four sections; each returns {system: median figures} plus run details."""

    def __init__(
        self,
        found: Servers,
        plan: Plan,
        run: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]],
    ) -> None:
        self.redis, self.postgres, self.plan, self.run = (
            found.redis_url,
            found.database_url,
            plan,
            run,
        )

    def drain(self) -> dict[str, Any]:
        jobs = self.plan.jobs
        measures = {p: _peer(peers.drain, p, self.redis, jobs) for p in peers.DRAIN_PEERS}
        return interleaved(self.plan.runs, measures, self._pulse_drain)

    def _pulse_drain(self) -> dict[str, Any]:
        result = self.run(_as_dict(pulse_drain.drain(self.redis, self.postgres, self.plan.jobs)))
        return result

    def tasks(self) -> dict[str, Any]:
        """No-op tasks, results kept ("pulse") and off, beside Pulse's own notification drain
        (the target: tasks at least as fast) and the peers' no-op jobs."""
        jobs = self.plan.jobs
        args = (self.run, tasks_drain.drain_tasks, self.redis, self.postgres, jobs)
        measures = {
            "pulse_results_off": _drain_with(*args, results=False),
            "pulse_notifications": self._pulse_drain,
        }
        measures |= {p: _peer(peers.drain, p, self.redis, jobs) for p in peers.DRAIN_PEERS}
        return interleaved(self.plan.runs, measures, _drain_with(*args, results=True))

    def task_latency(self) -> dict[str, Any]:
        rate, seconds = self.plan.rate, self.plan.latency_s
        measures = {
            p: _peer(peers.latency, p, self.redis, rate, seconds) for p in peers.LATENCY_PEERS
        }
        pulse = _async(
            self.run, latency.pulse_task_latency, self.redis, self.postgres, rate, seconds
        )
        return interleaved(self.plan.runs, measures, pulse)

    def accept(self) -> dict[str, Any]:
        seconds = self.plan.accept_s
        measures: dict[str, Measure] = {
            f"bare_{mode}": _async(self.run, accept.bare_accept, self.redis, mode, seconds)
            for mode in ("one", "pipelined")
        }
        pulse = _async(self.run, accept.pulse_accept, self.redis, self.postgres, seconds)
        return interleaved(self.plan.runs, measures, pulse)

    def latency(self) -> dict[str, Any]:
        rate, seconds = self.plan.rate, self.plan.latency_s
        measures = {
            p: _peer(peers.latency, p, self.redis, rate, seconds) for p in peers.LATENCY_PEERS
        }
        pulse = _async(self.run, latency.pulse_latency, self.redis, self.postgres, rate, seconds)
        return interleaved(self.plan.runs, measures, pulse)

    def memory(self) -> dict[str, Any]:
        figures = self.run(memory.pulse_memory(self.redis, self.postgres, self.plan.pending))
        _log("memory", "pulse", figures)
        return {"pulse": figures}


async def _as_dict(result: Coroutine[Any, Any, pulse_drain.DrainResult]) -> dict[str, Any]:
    done = await result
    return {
        "jobs": done.jobs, "seconds": done.seconds, "rate": done.rate,
        "cpu_us_per_job": done.cpu_us_per_job,
    }  # fmt: skip


def _drain_with(
    run: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]],
    drain: Callable[..., Coroutine[Any, Any, pulse_drain.DrainResult]],
    *args: Any,
    **kwargs: Any,
) -> Measure:
    return lambda: run(_as_dict(drain(*args, **kwargs)))


def _peer(function: Callable[..., dict[str, Any]], *args: Any) -> Measure:
    return lambda: function(*args)


def _async(
    run: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]],
    function: Callable[..., Coroutine[Any, Any, dict[str, Any]]],
    *args: Any,
) -> Measure:
    return lambda: run(function(*args))


def interleaved(runs: int, measures: dict[str, Measure], pulse: Measure) -> dict[str, Any]:
    """``runs`` rounds of (peer A, Pulse, peer B, Pulse, ...); the median of each figure."""
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in [*measures, "pulse"]}
    for round_ in range(runs):
        for name, measure in measures.items():
            for who, run in ((name, measure), ("pulse", pulse)):
                samples[who].append(run())
                _log(f"round {round_ + 1}/{runs}", who, samples[who][-1])
    return {name: medians(samples[name]) for name in ["pulse", *measures]}


def medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over the samples; other fields from the first."""
    merged = dict(samples[0])
    for key, value in samples[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = statistics.median(sample[key] for sample in samples)
    merged["samples"] = len(samples)
    return merged


def _log(stage: str, who: str, figures: dict[str, Any]) -> None:
    shown = {k: round(v, 2) for k, v in figures.items() if isinstance(v, float)}
    print(f"bench: {stage} {who}: {shown}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
