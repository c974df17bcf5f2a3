"""Several task jobs in one commit: a batch, a job ``after`` others, a group with a callback.

The commit goes through ``AcceptService`` (Idempotency-Key, withdrawal on a Redis failure),
writing every row in one transaction (``TaskJobStore``) and streaming the jobs queued now in
one pipelined publish; jobs that wait for parents are streamed when released
(sql/014_task_flows.sql, ``pulse.runtime.releaser``). In the spirit of BullMQ flows: a job
waits for all its parents and runs only if they all succeeded; a group is its members and a
callback that waits for them and receives their results.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from pulse.core.errors import InvalidInput
from pulse.core.jobs import (
    JOB_STATUS,
    JobAccepted,
    JobBatchAccepted,
    JobGroupAccepted,
    JobGroupRequest,
    JobItemAccepted,
    JobRequest,
)
from pulse.core.models import Job, Status
from pulse.core.timeutil import utcnow
from pulse.metrics import Metrics
from pulse.services.accept import AcceptService, Answer, IdempotencyKey
from pulse.store.idempotency import Remembered
from pulse.store.task_jobs import NewTaskJob, TaskJobStore, Written, decide
from pulse.store.tenants import Connection

if TYPE_CHECKING:
    from pulse.services.tasks import TaskService


@dataclass(frozen=True, slots=True)
class GroupBound:
    """What a group's callback may be given as ``results`` (sql/017): each member's result is
    at most ``result_bytes`` (PULSE_MAX_RESULT_BYTES), all of them at most ``results_bytes``
    (PULSE_MAX_GROUP_RESULTS_BYTES), over which the callback gets the members' job ids."""

    result_bytes: int = 1024 * 1024
    results_bytes: int = 16 * 1024 * 1024

    def may_exceed(self, members: int) -> bool:
        return members * self.result_bytes > self.results_bytes


class NoValidItem(InvalidInput):
    """No item of a batch is valid: 422 with every item's errors."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("no item of the batch is valid")
        self.errors = errors


@dataclass(slots=True)
class _FlowCommit:
    store: TaskJobStore
    tenant_id: str
    all_jobs: list[Job]
    after: dict[str, tuple[str, ...]]
    body: Callable[[datetime], bytes]
    location: str | None = None
    due_at: dict[str, datetime] = field(default_factory=dict)  # a batch's deferred jobs
    jobs: list[Job] = field(default_factory=list)  # to stream: those queued by the commit
    scheduled: list[tuple[Job, datetime]] = field(default_factory=list)  # to index by due time

    @property
    def job(self) -> Job:
        return self.all_jobs[0]

    @property
    def streamed(self) -> list[Job]:
        return self.jobs

    @property
    def indexed(self) -> list[tuple[Job, datetime]]:
        return self.scheduled

    def render(self, created_at: datetime) -> bytes:
        return self.body(created_at)

    def rows(self) -> list[NewTaskJob]:
        return [
            NewTaskJob(
                id=job.id,
                channel=job.channel,
                recipient=job.recipient,
                payload_json=msgspec.json.encode(job.payload),
                priority=job.priority,
                max_attempts=job.max_attempts,
                after=self.after.get(job.id, ()),
                send_at=self.due_at.get(job.id),
            )
            for job in self.all_jobs
        ]

    async def insert(self) -> datetime:
        written = await self.store.insert(self.tenant_id, self.rows())
        self._queued(written)
        return written.created_at

    async def insert_keyed(self, conn: Connection, answer: Remembered) -> bool:
        written = await self.store.insert_keyed(conn, self.tenant_id, self.rows(), answer)
        if written is None:
            return False
        self._queued(written)
        return True

    async def withdraw(self) -> None:
        await self.store.withdraw([job.id for job in self.all_jobs])

    def _queued(self, written: Written) -> None:
        queued, scheduled = set(written.queued), set(written.scheduled)
        self.jobs = [job for job in self.all_jobs if job.id in queued]
        due = self.due_at
        self.scheduled = [(job, due[job.id]) for job in self.all_jobs if job.id in scheduled]


class TaskFlows:
    def __init__(
        self, tasks: TaskService, accept: AcceptService, store: TaskJobStore, metrics: Metrics
    ) -> None:
        self._tasks = tasks
        self._accept = accept
        self._store = store
        self._metrics = metrics

    async def enqueue_after(
        self, tenant_id: str, request: JobRequest, key: IdempotencyKey | None
    ) -> Answer:
        """One job that starts once every job of ``request.after`` succeeded."""
        job = await self._tasks.job_of(tenant_id, request, _key(key))
        after = {job.id: await self._parents(tenant_id, request.after or [], "$.after")}
        status = await self._predict(tenant_id, [job], after)

        def body(created_at: datetime) -> bytes:
            return msgspec.json.encode(_accepted(job, status, created_at))

        commit = _FlowCommit(self._store, tenant_id, [job], after, body, f"/api/jobs/{job.id}")
        return await self._commit(commit, key)

    async def batch(
        self, tenant_id: str, items: Sequence[JobRequest | InvalidInput],
        key: IdempotencyKey | None, max_ahead_s: float = 0.0,
    ) -> Answer:  # fmt: skip
        """Each item checked on its own and answered on its own (its id, or its errors with
        JSON Pointers into the item list); the valid ones committed together. An item's
        ``send_at``/``delay_s`` (at most ``max_ahead_s`` ahead) defers it."""
        errors: dict[int, list[dict[str, str]]] = {}
        jobs: list[tuple[int, Job]] = []
        after: dict[str, tuple[str, ...]] = {}
        due: dict[str, datetime] = {}
        now = utcnow()
        for index, item in enumerate(items):
            try:
                if isinstance(item, InvalidInput):
                    raise item
                when = item.due(now, max_ahead_s)
                job = await self._tasks.job_of(tenant_id, item, _key(key))
                if when is not None:
                    due[job.id] = when
                if item.after is not None:
                    after[job.id] = await self._parents(tenant_id, item.after, "$.after")
            except InvalidInput as exc:
                errors[index] = [{"detail": exc.detail, "pointer": _pointer(index, exc)}]
                continue
            jobs.append((index, job))
        if not jobs:
            raise NoValidItem([error for found in errors.values() for error in found])
        valid = [job for _, job in jobs]
        status = await self._predict(tenant_id, valid, after, due)

        def body(created_at: datetime) -> bytes:
            answered = [
                JobItemAccepted(index=index, job=_accepted(job, status, created_at, due))
                for index, job in jobs
            ] + [JobItemAccepted(index=index, errors=found) for index, found in errors.items()]
            answered.sort(key=lambda item: item.index)
            accepted = JobBatchAccepted(accepted=len(jobs), rejected=len(errors), items=answered)
            return msgspec.json.encode(accepted)

        commit = _FlowCommit(self._store, tenant_id, valid, after, body, due_at=due)
        return await self._commit(commit, key)

    async def group(
        self, tenant_id: str, request: JobGroupRequest, key: IdempotencyKey | None,
        bound: GroupBound = GroupBound(),
    ) -> Answer:  # fmt: skip
        """Members run side by side; ``then`` waits for all and gets their results in order
        (or, past ``bound``, their job ids: accepted only if its ``results`` takes them)."""
        members: list[Job] = []
        for index, member in enumerate(request.jobs):
            if member.after is not None:
                raise InvalidInput("a group's member cannot wait", f"$.jobs[{index}].after")
            _not_deferred(member, f"$.jobs[{index}]", "a group's members are not deferred")
            try:
                members.append(await self._tasks.job_of(tenant_id, member, _key(key)))
            except InvalidInput as exc:
                raise InvalidInput(exc.detail, _under(f"$.jobs[{index}]", exc)) from None
        jobs, after, then = list(members), {}, None
        if request.then is not None:
            _not_deferred(request.then, "$.then", "a group's callback waits on its members")
            try:
                ids_instead = len(members) if bound.may_exceed(len(members)) else 0
                then = await self._tasks.job_of(
                    tenant_id,
                    request.then,
                    _key(key),
                    results=True,
                    ids_instead=ids_instead,
                    bound=bound.results_bytes,
                )
                parents = await self._parents(tenant_id, request.then.after or [], "$.after")
            except InvalidInput as exc:
                raise InvalidInput(exc.detail, _under("$.then", exc)) from None
            ids = [member.id for member in members]
            payload = then.payload | {"group": ids, "group_bytes": bound.results_bytes}
            then = msgspec.structs.replace(then, payload=payload)
            after[then.id] = (*ids, *parents)
            jobs.append(then)
        status = await self._predict(tenant_id, jobs, after)

        def body(created_at: datetime) -> bytes:
            accepted = JobGroupAccepted(
                jobs=[_accepted(member, status, created_at) for member in members],
                then=None if then is None else _accepted(then, status, created_at),
            )
            return msgspec.json.encode(accepted)

        return await self._commit(_FlowCommit(self._store, tenant_id, jobs, after, body), key)

    async def _commit(self, commit: _FlowCommit, key: IdempotencyKey | None) -> Answer:
        answer = await self._accept.commit(commit, key)
        if not answer.replayed:
            self._metrics.count_accepted((job.channel, job.priority) for job in commit.all_jobs)
        return answer

    async def _parents(self, tenant_id: str, ids: Sequence[str], where: str) -> tuple[str, ...]:
        """``ids`` as canonical job ids of the tenant's tasks; 422 naming the first that is
        not one."""
        canonical = []
        for index, raw in enumerate(ids):
            try:
                canonical.append(str(uuid.UUID(raw)))
            except ValueError:
                raise InvalidInput(f"after[{index}]: not a job id", f"{where}[{index}]") from None
        known = await self._store.parents(tenant_id, canonical) if canonical else {}
        for index, job_id in enumerate(canonical):
            if job_id not in known:
                raise InvalidInput(f"after[{index}]: no job {job_id}", f"{where}[{index}]")
        return tuple(dict.fromkeys(canonical))

    async def _predict(
        self, tenant_id: str, jobs: list[Job], after: dict[str, tuple[str, ...]],
        due: dict[str, datetime] | None = None,
    ) -> dict[str, Status]:  # fmt: skip
        """The status each job will have when committed, as far as can be told before (a
        parent may still end in between: the job's own document then tells)."""
        parents = await self._store.parents(tenant_id, [p for ids in after.values() for p in ids])
        due = due or {}
        rows = [
            NewTaskJob(job.id, "", "", b"", 0, 1, after.get(job.id, ()), due.get(job.id))
            for job in jobs
        ]
        first, _ = decide(rows, parents)
        return {job_id: status for job_id, (status, _) in first.items()}


def _accepted(
    job: Job, status: dict[str, Status], created_at: datetime,
    due: dict[str, datetime] | None = None,
) -> JobAccepted:  # fmt: skip
    when = None if due is None else due.get(job.id)
    return JobAccepted(
        id=job.id,
        task=job.recipient,
        status=JOB_STATUS[status[job.id]],
        priority=job.priority,
        created_at=created_at.isoformat(),
        send_at=None if when is None else when.isoformat(),
    )


def _key(key: IdempotencyKey | None) -> str | None:
    return None if key is None else key.value


def _under(prefix: str, exc: InvalidInput) -> str:
    return prefix + (exc.pointer or "$")[1:]


def _pointer(index: int, exc: InvalidInput) -> str:
    """A JSON path (``$.args.month``, ``$.after[0]``) as a JSON Pointer into the item list."""
    path = exc.pointer or getattr(exc, "at", None) or "$"
    if path.startswith("/"):
        return f"/{index}{path}"
    parts = path[1:].replace("[", ".").replace("]", "").split(".")
    return f"/{index}" + "".join(f"/{part}" for part in parts if part)


def _not_deferred(request: JobRequest, at: str, why: str) -> None:
    """A group's jobs start as the group says: a deferral there is refused, not ignored."""
    for deferral in ("send_at", "delay_s"):
        if getattr(request, deferral) is not None:
            raise InvalidInput(
                f"{deferral}: {why}; enqueue the group when it is due", f"{at}.{deferral}"
            )
