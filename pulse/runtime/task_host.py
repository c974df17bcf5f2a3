"""A worker's user tasks: loading their modules, their lanes, the hooks that build their
resources, the registry published for the API, cancellations, and the results' retention.

``pulse worker --tasks myapp.tasks,myapp.reports`` imports each module and serves every task of
every ``pulse.Tasks`` registry found at its top level (or, in a module without one, of an arq
``WorkerSettings`` class: ``pulse.compat.arq``); a module that cannot be imported stops
start-up, naming the module.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pulse.core.errors import PulseError
from pulse.metrics import Metrics
from pulse.queue.job_cancels import JobCancels
from pulse.queue.task_slots import TaskSlots
from pulse.runtime.acker import Acker
from pulse.runtime.task_lane import LaneSettings, TaskLane
from pulse.runtime.task_processes import ProcessPool
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.task_results import Published, TaskResults
from pulse.tasks import Task, Tasks

logger = logging.getLogger("pulse.runtime.task_host")
SWEEP_BATCH = 1000


class TaskModuleError(PulseError):
    """A ``--tasks`` module could not be loaded (or holds no tasks)."""


def load_registries(modules: str) -> list[Tasks]:
    """The ``Tasks`` registries of the comma-separated ``modules``, importable from the working
    directory as with ``celery -A`` and ``arq`` (``pulse worker --tasks myapp.tasks``)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    registries: list[Tasks] = []
    for name in filter(None, (part.strip() for part in modules.split(","))):
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise TaskModuleError(f"task module {name!r} could not be imported: {exc!r}") from exc
        found = [value for value in vars(module).values() if isinstance(value, Tasks)]
        settings = getattr(module, "WorkerSettings", None)
        if not found and isinstance(settings, type):  # an arq worker module, unchanged
            from pulse.compat.arq import tasks_from

            found = [tasks_from(settings)]
        if not found:
            raise TaskModuleError(
                f"task module {name!r} defines no pulse.Tasks registry (nor arq WorkerSettings)"
            )
        for registry in found:
            registry.module = name
        registries.extend(found)
    return registries


@dataclass
class TaskHost:
    registries: list[Tasks]
    results: TaskResults
    cancels: JobCancels
    worker: str
    retention_s: float
    sweep_interval_s: float
    resources: dict[str, Any] = field(default_factory=dict)
    lanes: dict[str, TaskLane] = field(default_factory=dict)
    processes: ProcessPool | None = None  # cpu_bound tasks' processes
    slots: TaskSlots | None = None  # fleet_concurrency's slots
    max_result_bytes: int = 1024 * 1024  # PULSE_MAX_RESULT_BYTES

    def tasks(self) -> Iterator[Task]:
        for registry in self.registries:
            yield from registry

    def build_lanes(
        self, acker: Acker, metrics: Metrics, concurrency: int, mailbox: int
    ) -> dict[str, TaskLane]:
        for task in self.tasks():
            lanes = task.options.concurrency or concurrency
            settings = LaneSettings(
                lanes, mailbox, self.retention_s, self.processes, self.slots, self.max_result_bytes
            )
            lane = TaskLane(task, self.results, acker, metrics, self.resources, settings)
            if lane.name in self.lanes:
                raise TaskModuleError(f"task {task.name!r} is defined twice")
            self.lanes[lane.name] = lane
        return self.lanes

    async def start(self) -> None:
        """Run the startup hooks (once per process), then publish what this worker serves."""
        cpu_bound = {t.fn.__module__: None for t in self.tasks() if t.options.cpu_bound}
        if cpu_bound and self.processes is not None:
            await self.processes.warm(tuple(cpu_bound))
        for registry in self.registries:
            for hook in registry.startup:
                await hook(self.resources)
        published = [
            Published(t.name, t.schema(), t.options.priority, t.options.max_attempts)
            for t in self.tasks()
        ]
        await self.results.publish(published, self.worker)
        logger.info("serving tasks %s", ", ".join(t.name for t in published))

    async def stop(self) -> None:
        if self.processes is not None:
            self.processes.close()
        for registry in self.registries:
            for hook in registry.shutdown:
                try:
                    await hook(self.resources)
                except Exception:  # one failing hook must not keep the others from running
                    logger.exception("a task shutdown hook failed")

    async def follow_cancels(self) -> None:
        await self.cancels.follow(self._cancel)

    def _cancel(self, job_id: str) -> None:
        if any(lane.cancel(job_id) for lane in self.lanes.values()):
            logger.info("cancelled the run of %s on request", job_id)

    async def sweep_results(self) -> None:
        """The retention loop: expired results deleted in batches."""
        while True:
            try:
                swept = SWEEP_BATCH
                while swept == SWEEP_BATCH:  # a full batch: more may be due
                    swept = await self.results.sweep(SWEEP_BATCH)
            except TRANSIENT_DB_ERRORS as exc:
                logger.warning("could not sweep results: %s", exc)
            await asyncio.sleep(self.sweep_interval_s)
