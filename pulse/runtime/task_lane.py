"""One lane per task: a bounded mailbox (by priority, then tenants in turn: ``fair_mailbox``)
drained by a fixed number of runners.

The task's counterpart of a channel's deliverer: the dispatcher hands it claimed deliveries,
each run becomes a ``Done`` for the acker, so retries, backoff, dead letters, leases (renewed by
the leaser however long a run takes), audit and metrics are the notifications' own. A run
over ``timeout_s`` is cancelled and counts as a retryable timeout; a run cancelled on request
(``cancel``) ends with its entry acknowledged (its row is already ``cancelled``). A plain
``def`` runs in a thread of the task's own (``task_threads``) with the same timeout (the
thread itself cannot be interrupted: it is abandoned, its answer dropped, and keeps its place
until it ends); a ``cpu_bound`` one in a worker process, killed on timeout
or cancellation (``task_processes``). A task with ``fleet_concurrency`` takes one of its slots
in Redis before it starts (``TaskSlots``); a slot Redis cannot give now is a retry that uses
no attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from pulse.core.models import task_channel
from pulse.core.ports import Delivered, Failed, Outcome, Retry
from pulse.core.retry import RetryPolicy, backoff_s
from pulse.core.storable import json_holds_nul
from pulse.core.timeutil import utcnow
from pulse.metrics import Metrics
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.task_slots import TaskSlots
from pulse.runtime.acker import Acker
from pulse.runtime.deliverer import delivery_context
from pulse.runtime.fair_mailbox import FairMailbox
from pulse.runtime.task_errors import import_root, said, tenant_traceback
from pulse.runtime.task_processes import ProcessDied, ProcessPool
from pulse.runtime.task_threads import TaskThreads, Turn
from pulse.runtime.work import NOT_STARTED, Delivery, Done, Try
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import RunRow
from pulse.store.task_results import TaskResults
from pulse.tasks import Context, Task
from pulse.tasks import Retry as RetryTask

logger = logging.getLogger("pulse.runtime.task_lane")
_encoder = msgspec.json.Encoder()


class Ending(NamedTuple):
    """How a run ended: a JSON result, or an error (a ``RunRow``'s own fields)."""

    result_json: bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None


class _CancelledOnRequest(Exception):
    """The run saw the CancelledError of a cancel on request (``cancel``)."""


class ResultTooLarge(Exception):
    """A result over PULSE_MAX_RESULT_BYTES (the job's error type)."""


class ResultNotSerializable(Exception):
    """A result that is not JSON (NaN or infinity inside)."""


@dataclass(frozen=True, slots=True)
class LaneSettings:
    concurrency: int
    mailbox: int
    retention_s: float  # PULSE_RESULT_RETENTION_S, unless the task keeps its own
    processes: ProcessPool | None = None  # for cpu_bound tasks
    slots: TaskSlots | None = None  # for tasks with a fleet_concurrency
    max_result_bytes: int = 1024 * 1024  # PULSE_MAX_RESULT_BYTES: results, progress notes


class TaskLane:
    def __init__(
        self, task: Task, results: TaskResults, acker: Acker, metrics: Metrics,
        resources: dict[str, Any], settings: LaneSettings,
    ) -> None:  # fmt: skip
        self._task = task
        self._seconds = metrics.delivery_seconds.labels(task_channel(task.name))
        self._results = results
        self._acker = acker
        self._resources = resources
        self._settings = settings
        self._policy = RetryPolicy(task.options.backoff_base_s, task.options.backoff_cap_s)
        self._rng = random.Random()
        self._mailbox: FairMailbox[Delivery] = FairMailbox()
        self._room = asyncio.Event()
        self._room.set()
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        self._root = import_root(task.fn.__module__)
        self._threads = TaskThreads(task.name, settings.concurrency)  # a plain def's own
        self._turns: dict[str, Turn] = {}
        self._runs: dict[str, tuple[Delivery, datetime]] = {}  # running, results kept

    @property
    def name(self) -> str:
        return task_channel(self._task.name)

    def put(self, delivery: Delivery) -> None:
        job = delivery.job
        self._mailbox.put_nowait(job.priority, job.tenant_id, delivery)
        if self._mailbox.qsize() >= self._settings.mailbox:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(self._settings.concurrency):
                    lanes.create_task(self._lane())
        finally:
            self._threads.close()  # hung threads are left to end on their own

    async def drain(self) -> None:
        await self._mailbox.join()

    def cancel(self, job_id: str) -> bool:
        """Cancel the run of ``job_id`` if this lane has it: the task sees CancelledError at
        its next await."""
        lane = self._running.get(job_id)
        if lane is None:
            return False
        if job_id not in self._cancelled:  # asked twice, cancelled once (taken back once)
            self._cancelled.add(job_id)
            lane.cancel()
        return True

    async def _lane(self) -> None:
        while True:
            delivery = await self._mailbox.get()
            if self._mailbox.qsize() < self._settings.mailbox:
                self._room.set()
            try:
                done = await self._attempt(delivery)
                if done is None:
                    self._acker.cancelled(delivery)
                else:
                    self._acker.submit(done)
            finally:
                self._mailbox.task_done()

    async def _attempt(self, delivery: Delivery) -> Done | None:
        """Run once, every log line carrying the job (as a delivery's do); None when cancelled
        on request."""
        started = time.perf_counter()
        try:
            with delivery_context(delivery):
                return await self._run_once(delivery)
        finally:
            self._seconds.observe(time.perf_counter() - started)

    async def _run_once(self, delivery: Delivery) -> Done | None:
        limit, slots = self._task.options.fleet_concurrency, self._settings.slots
        if limit is None or slots is None:
            return await self._run_in_turn(delivery)
        try:
            token = await slots.wait(self._task.name, limit)
        except TRANSIENT_REDIS_ERRORS as exc:  # not started: try again later, attempt unused
            error = f"could not take a slot: {exc}"
            return Done.without_call(delivery, Retry(error=error, error_class=NOT_STARTED))
        async with slots.held(self._task.name, token):
            return await self._run_in_turn(delivery)

    async def _run_in_turn(self, delivery: Delivery) -> Done | None:
        """A cpu-bound run waits for a free process, a plain def for a free thread of its task,
        before it starts (and its timeout)."""
        processes = self._settings.processes
        if self._task.options.cpu_bound and processes is not None:
            async with processes.turn():
                return await self._run_started(delivery)
        if self._task.is_async:
            return await self._run_started(delivery)
        async with self._threads.turn() as turn:
            self._turns[delivery.job.id] = turn
            try:
                return await self._run_started(delivery)
            finally:
                del self._turns[delivery.job.id]

    async def _run_started(self, delivery: Delivery) -> Done | None:
        """Run; unless results are off (``keep_result_s=0``: the row's status, attempts and
        last error are all there is), the run's ``job_results`` row goes with the ``Done``, so
        the acker commits it with the status in its batch's one statement. Nothing is written
        when a run starts: its start time is written with its end (or its first progress)."""
        job, started_at, clock = delivery.job, utcnow(), time.perf_counter()
        keep_s = self._keep_s()
        if keep_s > 0:
            self._runs[job.id] = (delivery, started_at)
        try:
            outcome, ending = await self._outcome(delivery)
        finally:
            self._runs.pop(job.id, None)
        if outcome is None:
            if keep_s > 0:
                await self._record_cancelled(delivery, started_at, ending)
            return None
        call = Try(None, outcome, started_at, time.perf_counter() - clock)
        if keep_s <= 0:
            return Done(delivery, (call,), outcome)
        final = not (isinstance(outcome, Retry) and delivery.attempt < job.max_attempts)
        run = RunRow(delivery.attempt, started_at, *ending, keep_s, final)
        return Done(delivery, (call,), outcome, run)

    async def _outcome(self, delivery: Delivery) -> tuple[Outcome | None, Ending]:
        options = self._task.options
        try:
            return self._succeeded(await self._awaited(delivery))
        except _CancelledOnRequest:
            return None, self._ending(asyncio.CancelledError())
        except TimeoutError as exc:
            error = f"timed out after {options.timeout_s:g} s"
            return self._retry(delivery, error, "TaskTimeout", None), self._ending(exc, error)
        except RetryTask as exc:
            outcome = self._retry(delivery, said(exc), "Retry", exc.after_s)
            return outcome, self._ending(exc)
        except msgspec.ValidationError as exc:
            return Failed(f"arguments: {exc}", "InvalidArguments"), self._ending(exc)
        except Exception as exc:
            kind = type(exc).__name__
            if isinstance(exc, (*options.retry_on, ProcessDied)):
                return self._retry(delivery, said(exc), kind, None), self._ending(exc)
            return Failed(said(exc) or kind, kind), self._ending(exc)

    async def _awaited(self, delivery: Delivery) -> Any:
        """The run, awaited in the lane's own task (no task, future or wait_for of its own per
        run): a timeout and a cancel on request both cancel the lane's task; a cancel on
        request is taken back (``uncancel``) once the run has seen it."""
        job_id, lane = delivery.job.id, asyncio.current_task()
        assert lane is not None  # lanes are tasks
        self._running[job_id] = lane
        try:
            async with asyncio.timeout(self._task.options.timeout_s):
                return await self._call(delivery)
        except asyncio.CancelledError:
            if self._take_back(job_id, lane) and not lane.cancelling():  # not the worker stopping
                raise _CancelledOnRequest from None
            raise
        finally:
            del self._running[job_id]  # no cancel() reaches this lane for this run from now on
            self._take_back(job_id, lane)  # a run that swallowed it

    def _take_back(self, job_id: str, lane: asyncio.Task[Any]) -> bool:
        if job_id not in self._cancelled:
            return False
        self._cancelled.discard(job_id)
        lane.uncancel()
        return True

    async def _call(self, delivery: Delivery) -> Any:
        job, task = delivery.job, self._task
        kwargs = task.arguments(job.payload.get("args", {}))
        args: tuple[Any, ...] = (self._context(delivery),) if task.takes_context else ()
        if task.is_async:
            return await task.fn(*args, **kwargs)
        if task.options.cpu_bound and self._settings.processes is not None:
            fn = task.fn
            return await self._settings.processes.run(fn.__module__, fn.__qualname__, kwargs)
        return await self._threads.run(self._turns[job.id], task.fn, *args, **kwargs)

    def _context(self, delivery: Delivery) -> Context:
        job = delivery.job
        return Context(
            job_id=job.id,
            task=self._task.name,
            attempt=delivery.attempt,
            max_attempts=job.max_attempts,
            tenant_id=job.tenant_id,
            idempotency_key=job.payload.get("key"),
            resources=self._resources,
            _progress=self._progress,
            results_omitted=job.payload.get("results_omitted"),
        )

    async def _progress(self, job_id: str, fraction: float, note: str | None) -> None:
        """Written at once (results kept; with results off there is no row to show it)."""
        cap = self._settings.max_result_bytes
        if note is not None and len(note.encode()) > cap:
            raise ValueError(f"the progress note is over PULSE_MAX_RESULT_BYTES ({cap} bytes)")
        running = self._runs.get(job_id)
        if running is None:
            return
        delivery, started_at = running
        job = delivery.job
        await self._results.progress(
            job_id, job.tenant_id, delivery.attempt, started_at, fraction, note
        )

    def _succeeded(self, value: Any) -> tuple[Outcome, Ending]:
        try:
            encoded = _encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            error = f"the result cannot be stored as JSON: {exc}"
            return Failed(error, "ResultNotSerializable"), self._ending(exc, error)
        except RecursionError:
            error = "the result cannot be stored as JSON: it is nested too deeply"
            return Failed(error, "ResultNotSerializable"), self._ending(
                ResultNotSerializable(error)
            )
        cap = self._settings.max_result_bytes
        if len(encoded) > cap:  # not retried: the same run would give the same size again
            error = (
                f"the result is {len(encoded)} bytes of JSON, over PULSE_MAX_RESULT_BYTES ({cap})"
            )
            return Failed(error, "ResultTooLarge"), self._ending(ResultTooLarge(error), error)
        if json_holds_nul(encoded):  # PostgreSQL's jsonb cannot hold U+0000
            error = "the result cannot be stored as JSON: a string in it holds U+0000 (NUL)"
            return Failed(error, "ResultNotSerializable"), self._ending(
                ResultNotSerializable(error)
            )
        if b"null" in encoded and _non_finite(value):  # msgspec writes NaN and inf as null
            error = "the result cannot be stored as JSON: it holds NaN or infinity"
            return Failed(error, "ResultNotSerializable"), self._ending(
                ResultNotSerializable(error)
            )
        return Delivered(), Ending(encoded, None, None, None)

    def _retry(self, delivery: Delivery, error: str, kind: str, after_s: float | None) -> Retry:
        if after_s is None:
            after_s = backoff_s(delivery.attempt, self._policy, self._rng)
        return Retry(error=error or kind, after_s=after_s, error_class=kind)

    def _ending(self, exc: BaseException, message: str | None = None) -> Ending:
        """The run's error as its tenant reads it: secrets scrubbed, Pulse's frames trimmed."""
        redact = self._acker.redact.text
        cap = self._settings.max_result_bytes  # an error is a result too: kept at most this
        trace = tenant_traceback(exc, self._root, redact)[-cap:]
        text = redact(message or said(exc) or type(exc).__name__)[:cap]
        return Ending(None, type(exc).__name__, text, trace)

    def _keep_s(self) -> float:
        keep = self._task.options.keep_result_s
        return self._settings.retention_s if keep is None else keep

    async def _record_cancelled(
        self, delivery: Delivery, started_at: datetime, ending: Ending
    ) -> None:
        """A run cancelled on request ends here: the acker only acknowledges its entry."""
        run = RunRow(delivery.attempt, started_at, *ending, self._keep_s())
        try:
            await self._results.cancelled(delivery.job.id, delivery.job.tenant_id, run)
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("could not record the cancellation of %s: %s", delivery.job.id, exc)


def _non_finite(value: Any) -> bool:
    """Whether a float NaN or infinity lies anywhere inside ``value`` (iterative)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
        elif isinstance(item, msgspec.Struct):
            todo.extend(msgspec.structs.astuple(item))
    return False
