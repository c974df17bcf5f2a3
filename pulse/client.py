"""A Python client for Pulse's HTTP API, async and sync, with typed models.

Retries on 429, 503 and connection errors, honouring Retry-After; every ``send`` carries an
Idempotency-Key (generated when not given), so a retried send never creates a second
notification.

    async with AsyncPulseClient("http://127.0.0.1:8000", api_key) as pulse:
        accepted = await pulse.send("someone@example.com", "email",
                                    {"subject": "Hello", "body": "Welcome"}, priority=1)
        print((await pulse.get(accepted.id)).status)
"""

from __future__ import annotations

import asyncio
import builtins
import random
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import msgspec

from pulse.core.documents import (
    Accepted,
    AttemptsDocument,
    NotificationDocument,
    NotificationList,
)
from pulse.core.jobs import (
    JobAccepted,
    JobBatchAccepted,
    JobDocument,
    JobGroupAccepted,
    JobList,
)
from pulse.core.views import NotificationView

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0

__all__ = [
    "Accepted",
    "AsyncPulseClient",
    "Job",
    "JobDocument",
    "JobFailed",
    "JobSpec",
    "NotificationDocument",
    "PulseAPIError",
    "PulseClient",
    "Rejected",
]
LONG_POLL_S = 30.0  # one GET /api/jobs/{id}?wait= at most this long (the API allows 60)


class PulseAPIError(Exception):
    """The API answered with an error; ``problem`` is its RFC 9457 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail', problem)}")
        self.status = status
        self.problem = problem


class JobFailed(Exception):
    """The job ended without a result (failed or cancelled); ``job`` is its document."""

    def __init__(self, job: JobDocument) -> None:
        error = job.error.message if job.error is not None else None
        super().__init__(f"job {job.id} {job.status}: {error}")
        self.job = job


@dataclass(frozen=True, slots=True)
class Job:
    """An enqueued task's job, bound to the client that enqueued it."""

    accepted: JobAccepted
    client: AsyncPulseClient
    replayed: bool = False  # the Idempotency-Key had been used: this is the first job again

    @property
    def id(self) -> str:
        return self.accepted.id

    async def get(self, *, wait_s: float = 0) -> JobDocument:
        return await self.client.job(self.id, wait_s=wait_s)

    async def result(self, *, timeout_s: float | None = None) -> Any:
        return await self.client.result(self.id, timeout_s=timeout_s)

    async def cancel(self) -> JobDocument:
        return await self.client.cancel_job(self.id)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of ``enqueue_many`` or ``group``: ``JobSpec("reports.build", {"month": ...})``.
    ``after``: jobs (or their ids) that must all succeed first."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    max_attempts: int | None = None
    after: Sequence[str | Job] = ()
    send_at: datetime | None = None  # deferred to this (aware) time
    delay_s: float | None = None  # deferred by this many seconds

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task": self.task, "args": self.args}
        at = None if self.send_at is None else self.send_at.isoformat()
        optional = {
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "send_at": at,
            "delay_s": self.delay_s,
        }
        body |= {name: value for name, value in optional.items() if value is not None}
        if self.after:
            body["after"] = _ids(self.after)
        return body


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item of ``enqueue_many`` the API refused: its index and errors (JSON Pointers)."""

    index: int
    errors: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Group:
    """A group's members and the callback that receives their results (``then``)."""

    jobs: list[Job]
    then: Job | None


def _ids(jobs: Sequence[str | Job]) -> list[str]:
    return [job if isinstance(job, str) else job.id for job in jobs]


class AsyncPulseClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        recipient: str,
        channel: str,
        payload: dict[str, Any],
        *,
        priority: int | None = None,
        max_attempts: int | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        send_at: datetime | None = None,
        delay_s: float | None = None,
        deliver_in_window: dict[str, str] | None = None,
    ) -> Accepted:
        """``send_at`` (aware) or ``delay_s`` schedule it; ``deliver_in_window`` such as
        ``{"tz": "Europe/Paris", "from": "08:00", "to": "21:00"}`` keeps it in quiet hours."""
        body: dict[str, Any] = {"recipient": recipient, "channel": channel, "payload": payload}
        optional = {"priority": priority, "max_attempts": max_attempts, "metadata": metadata}
        optional |= _when(send_at, delay_s, deliver_in_window)
        body |= {name: value for name, value in optional.items() if value is not None}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return await self._call("POST", "/api/notifications/", Accepted, body, headers)

    async def get(self, notification_id: str) -> NotificationDocument:
        return await self._call(
            "GET", f"/api/notifications/{notification_id}", NotificationDocument
        )

    async def list(self, **filters: str | int) -> NotificationList:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return await self._call("GET", f"/api/notifications/?{query}", NotificationList)

    async def attempts(self, notification_id: str) -> AttemptsDocument:
        path = f"/api/notifications/{notification_id}/attempts"
        return await self._call("GET", path, AttemptsDocument)

    async def cancel(self, notification_id: str) -> NotificationView:
        path = f"/api/notifications/{notification_id}/cancel"
        return await self._call("POST", path, NotificationView)

    async def enqueue(
        self,
        task: str,
        /,
        *,
        _priority: int | None = None,
        _max_attempts: int | None = None,
        _idempotency_key: str | None = None,
        _after: Sequence[str | Job] = (),
        _send_at: datetime | None = None,
        _delay_s: float | None = None,
        **args: Any,
    ) -> Job:
        """``job = await client.enqueue("reports.build", month="2026-11")``: run a task, then
        ``await job.result(timeout_s=60)``. Options take a leading underscore so they never
        clash with the task's own arguments; ``_after=[job, ...]``: start once they all
        succeeded (one that fails or is cancelled cancels this one); ``_send_at`` (aware) or
        ``_delay_s``: not before then (status 'scheduled' until due)."""
        spec = JobSpec(task, args, _priority, _max_attempts, _after, _send_at, _delay_s)
        body = spec.body()
        headers = {"Idempotency-Key": _idempotency_key or str(uuid.uuid4())}
        answered: dict[str, str] = {}
        accepted = await self._call("POST", "/api/jobs/", JobAccepted, body, headers, answered)
        return Job(accepted, self, replayed=answered.get("idempotent-replayed") == "true")

    async def enqueue_many(
        self, specs: Sequence[JobSpec], *, idempotency_key: str | None = None
    ) -> builtins.list[Job | Rejected]:
        """Many jobs in one request, one commit and one pipelined append: for each spec, in
        order, its Job or why it was refused (PulseAPIError 422 if none was valid)."""
        body = {"items": [spec.body() for spec in specs]}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        answer = await self._call("POST", "/api/jobs/batch", JobBatchAccepted, body, headers)
        return [
            Job(item.job, self) if item.job is not None else Rejected(item.index, item.errors or [])
            for item in answer.items
        ]

    async def group(
        self, specs: Sequence[JobSpec], *, then: JobSpec | None = None,
        idempotency_key: str | None = None,
    ) -> Group:  # fmt: skip
        """Jobs side by side; once all succeeded, ``then`` runs with their results, in order,
        as its ``results`` argument (a member that fails cancels it)."""
        body: dict[str, Any] = {"jobs": [spec.body() for spec in specs]}
        if then is not None:
            body["then"] = then.body()
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        answer = await self._call("POST", "/api/jobs/group", JobGroupAccepted, body, headers)
        callback = None if answer.then is None else Job(answer.then, self)
        return Group([Job(accepted, self) for accepted in answer.jobs], callback)

    async def job(self, job_id: str, *, wait_s: float = 0) -> JobDocument:
        """The job; with ``wait_s``, answered once it ends or after that long (long poll)."""
        query = f"?wait={wait_s:g}" if wait_s else ""
        return await self._call("GET", f"/api/jobs/{job_id}{query}", JobDocument)

    async def jobs(self, **filters: str | int) -> JobList:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return await self._call("GET", f"/api/jobs/?{query}", JobList)

    async def cancel_job(self, job_id: str) -> JobDocument:
        return await self._call("POST", f"/api/jobs/{job_id}/cancel", JobDocument)

    async def result(self, job_id: str, *, timeout_s: float | None = None) -> Any:
        """The job's result once it succeeds (waiting by long poll, no busy loop); raises
        JobFailed if it failed or was cancelled, TimeoutError after ``timeout_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            left = LONG_POLL_S if deadline is None else deadline - loop.time()
            poll = min(left, LONG_POLL_S, (self._timeout.total or LONG_POLL_S) * 0.8)
            job = await self.job(job_id, wait_s=max(0.0, round(poll, 3)))
            if job.finished:
                if job.status != "succeeded":
                    raise JobFailed(job)
                return job.result
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status}")

    async def reschedule(
        self,
        notification_id: str,
        *,
        send_at: datetime | None = None,
        delay_s: float | None = None,
        deliver_in_window: dict[str, str] | None = None,
    ) -> NotificationView:
        """A scheduled notification's new due time (409 once it is no longer scheduled)."""
        when = _when(send_at, delay_s, deliver_in_window)
        body = {name: value for name, value in when.items() if value is not None}
        return await self._call(
            "PATCH", f"/api/notifications/{notification_id}", NotificationView, body
        )

    async def _call(
        self,
        method: str,
        path: str,
        kind: type[T],
        body: Any = None,
        headers: dict[str, str] | None = None,
        answered: dict[str, str] | None = None,
    ) -> T:
        """``answered``, when given, receives the headers (lower-cased names) of the answer
        returned."""
        for attempt in range(self._max_retries + 1):
            try:
                status, data, got = await self._once(method, path, body, headers)
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempt == self._max_retries:
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if status < 400:
                if answered is not None:
                    answered.update(got)
                return msgspec.json.decode(data, type=kind)
            if status not in RETRY_STATUSES or attempt == self._max_retries:
                raise PulseAPIError(status, _problem(data))
            await asyncio.sleep(self._delay(attempt, got.get("retry-after")))
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> tuple[int, bytes, dict[str, str]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        data = None if body is None else msgspec.json.encode(body)
        extra = (headers or {}) | ({"Content-Type": "application/json"} if data else {})
        async with self._session.request(
            method, self._base + path, data=data, headers=extra
        ) as response:
            names = {name.lower(): value for name, value in response.headers.items()}
            return response.status, await response.read(), names

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:
                pass
        return random.uniform(0, self._backoff_s * 2**attempt)


def _when(
    send_at: datetime | None, delay_s: float | None, window: dict[str, str] | None
) -> dict[str, Any]:
    at = None if send_at is None else send_at.isoformat()
    return {"send_at": at, "delay_s": delay_s, "deliver_in_window": window}


def _problem(data: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {"detail": data.decode(errors="replace")}
    return decoded if isinstance(decoded, dict) else {"detail": decoded}


class PulseClient:
    """The same calls, blocking: each runs on a private event loop owned by the client."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncPulseClient(base_url, api_key, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._client.close())
        self._runner.close()

    def send(
        self, recipient: str, channel: str, payload: dict[str, Any], **options: Any
    ) -> Accepted:
        return self._run(self._client.send(recipient, channel, payload, **options))

    def get(self, notification_id: str) -> NotificationDocument:
        return self._run(self._client.get(notification_id))

    def reschedule(self, notification_id: str, **when: Any) -> NotificationView:
        return self._run(self._client.reschedule(notification_id, **when))

    def list(self, **filters: str | int) -> NotificationList:
        return self._run(self._client.list(**filters))

    def attempts(self, notification_id: str) -> AttemptsDocument:
        return self._run(self._client.attempts(notification_id))

    def cancel(self, notification_id: str) -> NotificationView:
        return self._run(self._client.cancel(notification_id))

    def enqueue(self, task: str, /, **args: Any) -> JobAccepted:
        """Run a task; follow it with ``job(id)`` and ``result(id, timeout_s=...)``."""
        return self._run(self._client.enqueue(task, **args)).accepted

    def enqueue_many(
        self, specs: Sequence[JobSpec], **options: Any
    ) -> builtins.list[Job | Rejected]:
        """As the async one; follow a Job with ``job(id)`` and ``result(id)`` here."""
        return self._run(self._client.enqueue_many(specs, **options))

    def group(self, specs: Sequence[JobSpec], **options: Any) -> Group:
        return self._run(self._client.group(specs, **options))

    def job(self, job_id: str, *, wait_s: float = 0) -> JobDocument:
        return self._run(self._client.job(job_id, wait_s=wait_s))

    def jobs(self, **filters: str | int) -> JobList:
        return self._run(self._client.jobs(**filters))

    def cancel_job(self, job_id: str) -> JobDocument:
        return self._run(self._client.cancel_job(job_id))

    def result(self, job_id: str, *, timeout_s: float | None = None) -> Any:
        return self._run(self._client.result(job_id, timeout_s=timeout_s))

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(call)
