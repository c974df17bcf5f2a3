"""The ``Tasks`` registry and the ``Task`` it makes of each decorated function.

A task's arguments are its keyword parameters; their type hints become a msgspec struct
(``Task.arguments`` converts and checks a JSON object against it) and a JSON Schema that the
worker publishes, so the API refuses bad arguments at accept time (422 naming the argument)
instead of accepting a job that can never run.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, overload

import msgspec

from pulse.core.models import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from pulse.tasks.context import Context
from pulse.tasks.schedules import CronEntry

Hook = Callable[[dict[str, Any]], Awaitable[None]]
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_.:<>-]{0,199}"  # what JobRequest.task accepts


class Retry(Exception):
    """Raised inside a task: run it again after ``after`` (seconds or a timedelta), counting
    an attempt; past ``max_attempts`` it goes to the dead letters like any failure."""

    def __init__(self, after: float | timedelta | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.after_s = after.total_seconds() if isinstance(after, timedelta) else after

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole: a cpu-bound task raises it in another process."""
        return (Retry, (self.after_s, str(self)))


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's defaults (a request may ask for its own priority and max_attempts)."""

    name: str
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = 3
    timeout_s: float = 300.0
    retry_on: tuple[type[BaseException], ...] = ()
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    keep_result_s: float | None = None  # None: PULSE_RESULT_RETENTION_S; 0: results off
    concurrency: int | None = None  # runs at once per worker process; None: PULSE_TASK_CONCURRENCY
    fleet_concurrency: int | None = None  # runs at once across every worker (Redis slots)
    cpu_bound: bool = False  # run in a worker process (a plain def at a module's top level)

    def __post_init__(self) -> None:
        if not re.fullmatch(NAME_PATTERN, self.name):
            raise ValueError(f"task name {self.name!r}: letters, digits, '_', '.', ':', '-'")
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be {MIN_PRIORITY}..{MAX_PRIORITY}")
        if not 1 <= self.max_attempts <= 100:
            raise ValueError("max_attempts must be 1..100")
        for limit in (self.concurrency, self.fleet_concurrency):
            if limit is not None and limit < 1:
                raise ValueError("concurrency and fleet_concurrency must be at least 1")
        if self.timeout_s <= 0 or not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ValueError("timeout_s > 0 and 0 < backoff_base_s <= backoff_cap_s")


class Enqueuer(Protocol):
    """What ``Task.enqueue`` needs of a client (``pulse.client.AsyncPulseClient``)."""

    async def enqueue(self, task: str, /, **args: Any) -> Any: ...


class Task:
    """A user function registered as a task; calling it calls the function (tests)."""

    def __init__(self, fn: Callable[..., Any], options: TaskOptions) -> None:
        self.fn = fn
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_context, self.args_type = _signature(fn)
        self._decoder = self.args_type
        if options.cpu_bound:
            _check_cpu_bound(fn, self.is_async, self.takes_context)

    @property
    def name(self) -> str:
        return self.options.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments object (what the API validates requests with)."""
        return msgspec.json.schema(self.args_type)

    def arguments(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a call, converted from JSON (raises msgspec.ValidationError).
        The API checked the args with JSON Schema, where ``1e3`` and ``1e16`` are integers: when
        the strict conversion refuses them, the integral floats are taken as the ints they are
        rather than failing an accepted job."""
        try:
            args = msgspec.convert(raw, self.args_type)
        except msgspec.ValidationError:
            args = msgspec.convert(_integral(raw), self.args_type)
        return {name: getattr(args, name) for name in self.args_type.__struct_fields__}

    async def enqueue(self, client: Enqueuer, /, **args: Any) -> Any:
        """``await build_report.enqueue(client, month="2026-11")``: a typed enqueue."""
        return await client.enqueue(self.name, **args)


class Tasks:
    """A registry of tasks and of the process-wide hooks that build their resources."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self.startup: list[Hook] = []
        self.shutdown: list[Hook] = []
        self.schedules: list[CronEntry] = []  # registered as job schedules at worker start
        self.module: str | None = None  # the --tasks module it came from (its schedules' origin)

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """``@tasks.task`` or ``@tasks.task(name=..., priority=..., max_attempts=...,
        timeout_s=..., retry_on=(...), backoff_base_s=..., backoff_cap_s=...,
        keep_result_s=..., concurrency=..., fleet_concurrency=..., cpu_bound=...)``."""

        def register(function: Callable[..., Any]) -> Task:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            task = Task(function, TaskOptions(name=task_name, **options))
            if task_name in self._tasks:
                raise ValueError(f"task {task_name!r} is registered twice")
            self._tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def on_startup(self, hook: Hook) -> Hook:
        """``async def hook(resources: dict)``: runs once per worker process before any task."""
        self.startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self.shutdown.append(hook)
        return hook

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)


def _check_cpu_bound(fn: Callable[..., Any], is_async: bool, takes_context: bool) -> None:
    """A cpu-bound task runs in another process, which imports it by name and cannot reach
    this process's context (progress, resources)."""
    if is_async:
        raise TypeError(f"{fn.__qualname__}: a cpu_bound task is a plain def, not async")
    if takes_context:
        raise TypeError(f"{fn.__qualname__}: a cpu_bound task takes no context")
    if "<locals>" in fn.__qualname__:
        raise TypeError(f"{fn.__qualname__}: a cpu_bound task is defined at a module's top level")


def _signature(fn: Callable[..., Any]) -> tuple[bool, type[msgspec.Struct]]:
    """Whether ``fn`` takes a context first, and a struct of its other parameters."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    takes_context = bool(params) and (
        params[0].name == "ctx" or hints.get(params[0].name) is Context
    )
    fields: list[Any] = []
    for param in params[1:] if takes_context else params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{fn.__qualname__}: *args and **kwargs cannot be described")
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"{fn.__qualname__}: arguments are passed by name")
        hint = hints.get(param.name, Any)
        default = param.default
        fields.append((param.name, hint) if default is param.empty else (param.name, hint, default))
    struct = msgspec.defstruct(
        f"{fn.__name__}_args", fields, kw_only=True, forbid_unknown_fields=True
    )
    return takes_context, struct


def _integral(value: Any) -> Any:
    """``value`` with each integral float (JSON's ``1e3``) as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value
