"""Accepting and cancelling task jobs: the task's counterpart of the notification accept.

Arguments are checked against the JSON Schema the workers published for the task (built from
the function's signature), so what is accepted can run: an unknown task, or an argument the
function would refuse, is a 422 naming it. The commit, Idempotency-Key, stream append and
withdrawal are ``AcceptService``'s; the row is a notification row (``task:<name>``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema_rs
import msgspec

from pulse.core.errors import InvalidInput, NotFound
from pulse.core.ids import uuid7
from pulse.core.jobs import JOB_STATUS, JobAccepted, JobDocument, JobRequest
from pulse.core.models import Job, JobKind, Status, task_channel
from pulse.metrics import Metrics
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.job_cancels import JobCancels
from pulse.services.accept import (
    AcceptService,
    Answer,
    IdempotencyKey,
    NotificationCommit,
    check_streamable,
)
from pulse.services.task_flows import TaskFlows
from pulse.store.jobs import JobStore, RegisteredTask
from pulse.store.notifications import NotificationStore
from pulse.store.task_jobs import TaskJobStore


@dataclass(frozen=True, slots=True)
class _TaskCommit(NotificationCommit):
    """A task job's row is a notification row (``task:<name>``); only its answer differs."""

    @property
    def location(self) -> str:
        return f"/api/jobs/{self.job.id}"

    def render(self, created_at: datetime) -> bytes:
        job = self.job
        accepted = JobAccepted(
            id=job.id,
            task=job.recipient,
            status=JOB_STATUS[Status.QUEUED if self.due is None else Status.SCHEDULED],
            priority=job.priority,
            created_at=created_at.isoformat(),
            send_at=None if self.due is None else self.due.isoformat(),
        )
        return msgspec.json.encode(accepted)


class TaskService:
    def __init__(
        self, accept: AcceptService, notifications: NotificationStore, jobs: JobStore,
        cancels: JobCancels, metrics: Metrics,
    ) -> None:  # fmt: skip
        self._accept = accept
        self._metrics = metrics
        self._notifications = notifications
        self._jobs = jobs
        self._cancels = cancels
        self._validators: dict[str, tuple[str, Any]] = {}
        self.flows = TaskFlows(self, accept, TaskJobStore(jobs.pool), metrics)

    async def enqueue(
        self,
        tenant_id: str,
        request: JobRequest,
        key: IdempotencyKey | None,
        due: datetime | None = None,
    ) -> Answer:
        """Accept one job; ``due`` (from ``request.due``): deferred until then."""
        if request.after is not None:
            return await self.flows.enqueue_after(tenant_id, request, key)
        job = await self.job_of(tenant_id, request, None if key is None else key.value)
        answer = await self._accept.commit(_TaskCommit(self._notifications, job, None, due), key)
        if not answer.replayed:
            self._metrics.count_accepted([(job.channel, job.priority)])
        return answer

    async def job_of(
        self, tenant_id: str, request: JobRequest, key: str | None, *, results: bool = False,
        ids_instead: int = 0, bound: int = 0,
    ) -> Job:  # fmt: skip
        """The job of a checked request (``results``: a group's callback, whose task receives
        the members' results as its ``results`` argument, or, when ``ids_instead`` members'
        results could total more than ``bound`` bytes, their job ids); 422 naming what is
        wrong."""
        registered = await self._jobs.registered(request.task)
        if registered is None:
            raise InvalidInput(f"task: no worker serves a task {request.task!r}", "$.task")
        if results and "results" in request.args:
            raise InvalidInput("args.results: a group gives its callback the results", "$.args")
        checked = request.args | {"results": []} if results else request.args
        self._check_args(request.task, registered, checked)
        if results:
            self._check_null_results(request, registered)
        if ids_instead:
            self._check_ids_instead(request, registered, ids_instead, bound)
        payload: dict[str, Any] = {"args": request.args}
        if key is not None:
            payload["key"] = key
        job = Job(
            id=str(uuid7()),
            tenant_id=tenant_id,
            kind=JobKind.TASK,
            channel=task_channel(request.task),
            recipient=request.task,
            payload=payload,
            priority=registered.priority if request.priority is None else request.priority,
            max_attempts=request.max_attempts or registered.max_attempts,
        )
        check_streamable(job)
        return job

    async def get(self, tenant_id: str, job_id: str) -> JobDocument:
        document = await self._jobs.get(tenant_id, job_id)
        if document is None:
            raise NotFound(f"no job {job_id}")
        return document

    async def cancel(self, tenant_id: str, job_id: str, by: str) -> JobDocument:
        """Queued (or retrying) jobs never start; a running one is told to stop."""
        before, cancelled = await self._jobs.cancel(tenant_id, job_id, by)
        if before is None:
            raise NotFound(f"no job {job_id}")
        if cancelled and before == Status.DELIVERING:
            # the row is cancelled either way; unreachable Redis only lets a run finish unrecorded
            with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):
                await self._cancels.announce(job_id)
        return await self.get(tenant_id, job_id)

    def _check_null_results(self, request: JobRequest, registered: RegisteredTask) -> None:
        """A member may leave no result to give (results off, ``keep_result_s=0``, or kept
        less long than its group ran): the callback then gets null in its place, so its
        ``results`` must take null, or it would be accepted only to fail."""
        nulls = request.args | {"results": [None]}
        if self._validator(request.task, registered.schema).is_valid(nulls):
            return
        raise InvalidInput(
            "args.results: a member that keeps no result gives null in its place, which"
            f" {request.task!r} does not take: declare results as list[T | None] or list[Any]",
            "$.args.results",
        )

    def _check_ids_instead(
        self, request: JobRequest, registered: RegisteredTask, members: int, bound: int
    ) -> None:
        """A callback whose members' results may exceed the bound must take their ids."""
        ids = request.args | {"results": [str(uuid7()) for _ in range(min(members, 2))]}
        if self._validator(request.task, registered.schema).is_valid(ids):
            return
        raise InvalidInput(
            f"args.results: the results of {members} member(s) may total more than"
            f" PULSE_MAX_GROUP_RESULTS_BYTES ({bound}), and then the callback gets their job ids"
            f" (strings) as results, which {request.task!r} does not take: declare results as"
            " list[Any] (or list[T | str]), or make the group smaller",
            "$.args.results",
        )

    def _check_args(self, task: str, registered: RegisteredTask, args: dict[str, Any]) -> None:
        validator = self._validator(task, registered.schema)
        for error in validator.iter_errors(args):
            path = "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
            )
            path += _named_property(error.kind)
            raise InvalidInput(f"args{path}: {error.message}", f"$.args{path}")

    def _validator(self, task: str, schema: dict[str, Any]) -> Any:
        text = msgspec.json.encode(schema, order="sorted").decode()
        cached = self._validators.get(task)
        if cached is None or cached[0] != text:
            cached = (text, jsonschema_rs.validator_for(schema))
            self._validators[task] = cached
        return cached[1]


def _named_property(kind: Any) -> str:
    """The argument a missing-or-unexpected error is about (its path is the object's)."""
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return f".{kind.property}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties) and kind.unexpected:
        return f".{kind.unexpected[0]}"
    return ""
