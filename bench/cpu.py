"""CPU time of process trees, read from /proc, to say which server is the ceiling of a curve.

A group is a set of root pids; its time is the user+system time of every live process in their
trees plus the time of the children they have already reaped (cutime, cstime), so PostgreSQL's
backends count under the postmaster. Network namespaces do not change the pid namespace: every
simulated host's processes are visible here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds including reaped children) of one process, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    ppid = int(fields[1])
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ppid, ticks * TICK_S


def _table() -> dict[int, tuple[int, float]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = found
    return table


def _tree_seconds(table: Mapping[int, tuple[int, float]], roots: Sequence[int]) -> float:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return sum(table[pid][1] for pid in seen)


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes, others' too)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) * TICK_S


@dataclass(frozen=True)
class Sample:
    at: float
    groups: dict[str, float]
    machine: float


def sample(groups: Mapping[str, Sequence[int]], alone: Collection[str] = ()) -> Sample:
    """CPU seconds so far of each group's process trees (of the processes alone, without the
    live children, for the groups named in ``alone``)."""
    table = _table()
    seconds = {
        name: sum(table[pid][1] for pid in roots if pid in table)
        if name in alone
        else _tree_seconds(table, roots)
        for name, roots in groups.items()
    }
    return Sample(time.monotonic(), seconds, _machine_busy_s())


def usage(before: Sample, after: Sample) -> dict[str, float]:
    """Per group, percent of one core over the interval; ``machine``: percent of all cores."""
    wall = max(after.at - before.at, 1e-9)
    used = {
        name: round(100 * max(after.groups[name] - before.groups[name], 0.0) / wall, 1)
        for name in before.groups
    }
    cores = os.cpu_count() or 1
    used["machine"] = min(100.0, round(100 * (after.machine - before.machine) / wall / cores, 1))
    return used
