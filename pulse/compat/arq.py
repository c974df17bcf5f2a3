"""arq on Pulse: run an arq ``WorkerSettings`` and enqueue with arq's ``enqueue_job``.

An arq user switches by changing an import and a command:

    # worker.py, as for arq; `from arq.worker import func, Retry` becomes:
    from pulse.compat.arq import Retry, func

    class WorkerSettings:
        functions = [download, func(report, name="report", max_tries=3, timeout=60)]
        on_startup = startup          # async def startup(ctx: dict) -> None
        on_shutdown = shutdown
        job_timeout = 300
        max_tries = 5
        max_jobs = 10                 # per function and process (arq: per worker, all functions)

    $ pulse worker --tasks worker   # instead of `arq worker.WorkerSettings`

    pool = ArqPool(AsyncPulseClient(url, api_key))   # instead of `await create_pool(...)`
    job = await pool.enqueue_job("download", "https://example.com", _job_id="dl-1")
    await job.result(timeout=30)

Each arq function becomes a Pulse task taking ``args`` (positional) and ``kwargs``; its ``ctx``
is a dict holding what ``on_startup`` put there plus ``job_id``, ``job_try`` and
``enqueue_time``. ``_job_id`` is the Idempotency-Key: a second enqueue with it returns None, as
arq does. ``_defer_by``/``_defer_until`` defer the job (status 'scheduled' until due). Not
carried over (refused loudly, never ignored): ``_queue_name``.

``cron_jobs = [cron(coroutine, hour=9, minute=0)]`` become Pulse job schedules (5-field cron,
UTC) of the tenant ``PULSE_ARQ_TENANT`` names, registered when the worker starts and keyed by
the cron job's name (default ``cron:<qualname>``, as arq's): a changed time updates it. One
job per occurrence, whatever the number of workers (arq's ``unique=True``, always).
``run_at_startup=True`` also enqueues it once per worker start. A ``second`` other than 0 has
no 5-field form: the worker refuses to start, naming the cron job.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pulse.client import AsyncPulseClient, Job, PulseAPIError
from pulse.core.ids import uuid7_ms
from pulse.core.jobs import JobDocument
from pulse.tasks import Context, Tasks
from pulse.tasks import Retry as PulseRetry
from pulse.tasks.schedules import CronEntry

ARQ_DEFAULTS = {"job_timeout": 300.0, "max_tries": 5, "keep_result": 3600.0}


class Retry(PulseRetry):
    """arq's ``Retry(defer=...)``: run the job again after ``defer`` (seconds or timedelta)."""

    def __init__(self, defer: float | timedelta | None = None) -> None:
        super().__init__(after=defer, reason="Retry requested")


@dataclass(frozen=True, slots=True)
class Function:
    """arq's ``func(...)``: a coroutine with its own name, tries, timeout and retention."""

    coroutine: Any
    name: str
    max_tries: int | None = None
    timeout_s: float | None = None
    keep_result_s: float | None = None


def func(
    coroutine: Any, *, name: str | None = None, max_tries: int | None = None,
    timeout: float | timedelta | None = None, keep_result: float | timedelta | None = None,
) -> Function:  # fmt: skip
    return Function(
        coroutine, name or coroutine.__qualname__, max_tries, _seconds(timeout),
        _seconds(keep_result),
    )  # fmt: skip


Field = int | set[int] | None  # arq's cron fields: a value, a set of values, None for any
WEEKDAYS = {"mon": 0, "tues": 1, "wed": 2, "thurs": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True, slots=True)
class CronJob:
    """arq's ``cron(...)``: ``coroutine`` run at each matching time, as a job schedule."""

    coroutine: Any
    name: str
    expression: str
    run_at_startup: bool = False
    max_tries: int | None = None
    timeout_s: float | None = None
    keep_result_s: float | None = None


def cron(
    coroutine: Any, *, name: str | None = None, month: Field = None, day: Field = None,
    weekday: Field | str = None, hour: Field = None, minute: Field = None, second: Field = 0,
    microsecond: int = 123_456, run_at_startup: bool = False, unique: bool = True,
    job_id: str | None = None, timeout: float | timedelta | None = None,
    keep_result: float | timedelta | None = None, keep_result_forever: bool | None = False,
    max_tries: int | None = None,
) -> CronJob:  # fmt: skip
    """arq's ``cron``; ``microsecond``, ``unique`` and ``job_id`` are arq's run-time details
    (one job per occurrence here); ``second`` must be 0 (ValueError naming the job)."""
    del microsecond, unique, job_id, keep_result_forever
    job_name = name or f"cron:{coroutine.__qualname__}"
    if second != 0 and second != {0}:
        raise ValueError(
            f"cron job {job_name!r}: second={second!r} cannot be expressed in 5-field cron"
            " (Pulse schedules fire on whole minutes): use second=0"
        )
    if isinstance(weekday, str):
        weekday = WEEKDAYS[weekday.lower()]
    days = None if weekday is None else {(w + 1) % 7 for w in _values(weekday)}  # cron: 0 = Sun
    fields = (minute, hour, day, month, days)
    expression = " ".join(_cron_field(f) for f in fields)
    return CronJob(
        coroutine, job_name, expression, run_at_startup, max_tries, _seconds(timeout),
        _seconds(keep_result),
    )  # fmt: skip


def _values(field: int | set[int]) -> set[int]:
    return {field} if isinstance(field, int) else set(field)


def _cron_field(field: Field) -> str:
    return "*" if field is None else ",".join(str(v) for v in sorted(_values(field)))


def tasks_from(settings: type) -> Tasks:
    """A ``pulse.Tasks`` registry running ``settings``' functions, cron jobs and hooks."""
    defaults = {key: getattr(settings, key, value) for key, value in ARQ_DEFAULTS.items()}
    registry = Tasks()
    for item in getattr(settings, "functions", ()):
        function = item if isinstance(item, Function) else _as_function(item)
        registry.task(
            name=function.name,
            max_attempts=function.max_tries or int(defaults["max_tries"]),
            timeout_s=function.timeout_s or _seconds(defaults["job_timeout"]) or 300.0,
            keep_result_s=function.keep_result_s or _seconds(defaults["keep_result"]),
            concurrency=getattr(settings, "max_jobs", None),
        )(_adapter(function))
    for job in getattr(settings, "cron_jobs", None) or ():
        if not isinstance(job, CronJob):
            raise TypeError(f"{job!r}: build cron jobs with pulse.compat.arq.cron")
        registry.task(
            name=job.name,
            max_attempts=job.max_tries or int(defaults["max_tries"]),
            timeout_s=job.timeout_s or _seconds(defaults["job_timeout"]) or 300.0,
            keep_result_s=job.keep_result_s or _seconds(defaults["keep_result"]),
        )(_adapter(Function(job.coroutine, job.name)))
        registry.schedules.append(CronEntry(job.name, job.name, job.expression, job.run_at_startup))
    for attribute, hooks in (("on_startup", registry.startup), ("on_shutdown", registry.shutdown)):
        hook = getattr(settings, attribute, None)
        if hook is not None:
            hooks.append(hook)  # arq's hooks take the ctx dict, as Pulse's take resources
    return registry


def _as_function(item: Any) -> Function:
    """A bare coroutine function, or arq's own ``Function`` (same attribute names)."""
    coroutine = getattr(item, "coroutine", item)
    if not inspect.iscoroutinefunction(coroutine):
        raise TypeError(f"{item!r} is not an async function: arq runs coroutines only")
    return Function(
        coroutine,
        getattr(item, "name", None) or coroutine.__name__,
        getattr(item, "max_tries", None),
        getattr(item, "timeout_s", None),
        getattr(item, "keep_result_s", None),
    )


def _adapter(function: Function) -> Any:
    coroutine = function.coroutine

    async def run(
        ctx: Context, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> Any:
        arq_ctx = dict(ctx.resources)
        arq_ctx |= {
            "job_id": ctx.job_id,
            "job_try": ctx.attempt,
            "enqueue_time": datetime.fromtimestamp((uuid7_ms(ctx.job_id) or 0) / 1000, UTC),
        }
        try:
            return await coroutine(arq_ctx, *(args or ()), **(kwargs or {}))
        except Exception as exc:
            defer_ms = getattr(exc, "defer_score", None)  # arq's own Retry, still imported
            if type(exc).__name__ == "Retry" and not isinstance(exc, PulseRetry):
                raise PulseRetry(after=None if defer_ms is None else defer_ms / 1000) from exc
            raise

    run.__name__ = function.name.replace(".", "_")
    return run


class ArqJob:
    """arq's ``Job``: ``job_id``, ``await job.status()``, ``await job.result(timeout=...)``."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.job_id = job.id

    async def status(self) -> str:
        return (await self._job.get()).status

    async def info(self) -> JobDocument:
        return await self._job.get()

    async def result(self, **options: float | None) -> Any:
        """``timeout=`` seconds (None: wait as long as it takes), as arq's."""
        return await self._job.result(timeout_s=options.get("timeout"))

    async def abort(self) -> bool:
        return (await self._job.cancel()).status == "cancelled"


class ArqPool:
    """What ``arq.create_pool`` gives, over Pulse's HTTP API: ``enqueue_job``, and ``close``
    (or ``async with``) to let its client's connections go."""

    def __init__(self, client: AsyncPulseClient) -> None:
        self._client = client

    async def close(self) -> None:
        await self._client.close()

    aclose = close

    async def __aenter__(self) -> ArqPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue_job(
        self, function: str, *args: Any, _job_id: str | None = None,
        _defer_until: datetime | None = None, _defer_by: float | timedelta | None = None,
        _queue_name: str | None = None, **kwargs: Any,
    ) -> ArqJob | None:  # fmt: skip
        """Enqueue ``function(ctx, *args, **kwargs)``; None if ``_job_id`` was used before.
        ``_defer_until`` (a naive time is local, as arq reads it) wins over ``_defer_by``
        (seconds or timedelta), as in arq; a time already past runs at once."""
        when: dict[str, Any] = {}
        if _defer_until is not None:
            when["_send_at"] = _defer_until.astimezone(UTC)  # naive: local time, as arq's
        elif _defer_by is not None:
            when["_delay_s"] = max(_seconds(_defer_by) or 0.0, 0.0)
        if _queue_name is not None:
            raise NotImplementedError("Pulse has priorities, not named queues: use priority")
        try:
            job = await self._client.enqueue(
                function, _idempotency_key=_job_id, args=list(args), kwargs=kwargs, **when
            )
        except PulseAPIError as exc:
            if _job_id is not None and exc.status == 422 and _key_reused(exc):
                return None  # the id was used with other arguments: it exists
            raise
        return None if job.replayed else ArqJob(job)


def _key_reused(exc: PulseAPIError) -> bool:
    return "Idempotency-Key" in str(exc.problem.get("detail", ""))


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value
