"""Accepting work: one owner for the path from a checked request to a 202.

For a notification and for a batch alike: the Idempotency-Key claim, the commit, the stream
append, the withdrawal when Redis fails, and the remembered answer. The stream message is
encoded before anything is committed, so a value the stream cannot carry is refused (422
naming the field) instead of leaving a committed notification that can never be streamed.

Without a key, a Redis failure withdraws the commit (503: the client's retry is the only copy).
With a key, the commit stays (the reconciler streams it) and the 503 says so: a twin request
may already have been answered with this commit, and the client's retry is answered by it too.

Each accept is a span (``pulse.accept``) of the request's trace; the job carries its context
and the request's id to the worker (``Job.origin``), so one trace spans accept to delivery.

No HTTP here (the CLI shares it): handlers parse, call, render.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from pulse import logs, tracing
from pulse.core.documents import Accepted
from pulse.core.errors import InvalidInput, Unavailable
from pulse.core.models import Job, Status
from pulse.core.tracecontext import Origin
from pulse.metrics import Metrics
from pulse.queue.codec import encode_job
from pulse.queue.due import DueIndex
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.publisher import Publisher
from pulse.services.answers import Answer as Answer
from pulse.services.answers import IdempotencyKey as IdempotencyKey
from pulse.services.answers import KeyBusy as KeyBusy
from pulse.services.answers import KeyReused as KeyReused
from pulse.services.answers import replay
from pulse.services.group_commit import JUST_ANSWERED, STILL_BUSY, GroupCommit
from pulse.store.batches import BatchItem, BatchStore, NewBatch, fanout_job
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.idempotency import Busy, Existing, IdempotencyStore, Remembered
from pulse.store.notifications import NewNotification, NotificationStore
from pulse.store.tenants import Connection

logger = logging.getLogger("pulse.services.accept")
MSGPACK_INT = (-(2**63), 2**64 - 1)  # what the stream's msgpack carries; jsonb carries more


class ItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | None = None
    errors: list[dict[str, str]] | None = None


class BatchAccepted(msgspec.Struct, kw_only=True):
    batch_id: str
    accepted: int
    rejected: int
    items: list[ItemResult]


def fingerprint(request: Any) -> bytes:
    """Of the decoded request in canonical JSON (keys sorted at every level), so neither
    formatting nor key order makes an equal request look different."""
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).digest()


def check_streamable(job: Job, where: str = "$") -> None:
    """Encode the stream message now, before any commit: a value it cannot carry (an integer
    beyond 64 bits) is the client's error, named, not a committed job that never streams."""
    try:
        encode_job(job)
    except (OverflowError, msgspec.EncodeError):
        path = _out_of_range(job) or where
        raise InvalidInput(f"{path[2:]}: integers must lie within -2^63 .. 2^64-1", path) from None


def _out_of_range(job: Job) -> str | None:
    values: list[tuple[str, Any]] = [("$.payload", job.payload)]
    values += [(f"$.fallback[{i}].payload", step["payload"]) for i, step in enumerate(job.fallback)]
    for root, value in values:
        for path, item in walk(root, value):
            if isinstance(item, int) and not MSGPACK_INT[0] <= item <= MSGPACK_INT[1]:
                return path
    return None


def walk(path: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Every value inside ``value`` with its JSON path, in document order; iterative."""
    todo = [(path, value)]
    while todo:
        where, item = todo.pop()
        yield where, item
        if isinstance(item, dict):
            todo.extend((f"{where}.{key}", child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            todo.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item))))


class _Commit(Protocol):
    """One request's write: what it commits, streams (or indexes by due time), withdraws and
    answers. A commit of several jobs knows which to stream and index once inserted."""

    @property
    def job(self) -> Job: ...

    @property
    def location(self) -> str | None: ...

    @property
    def streamed(self) -> list[Job]: ...

    @property
    def indexed(self) -> list[tuple[Job, datetime]]: ...

    def render(self, created_at: datetime) -> bytes: ...

    async def insert(self) -> datetime: ...

    async def insert_keyed(self, conn: Connection, answer: Remembered) -> bool: ...

    async def withdraw(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NotificationCommit:
    """A notification row's commit; a task job's is the same row, answered as a job."""

    store: NotificationStore
    job: Job
    metadata: dict[str, str] | None
    due: datetime | None = None  # scheduled: indexed by due time instead of streamed
    send_at: datetime | None = None  # the time asked for, kept on the row

    @property
    def location(self) -> str:
        return f"/api/notifications/{self.job.id}"

    @property
    def streamed(self) -> list[Job]:
        return [self.job] if self.due is None else []

    @property
    def indexed(self) -> list[tuple[Job, datetime]]:
        return [] if self.due is None else [(self.job, self.due)]

    def render(self, created_at: datetime) -> bytes:
        job = self.job
        return msgspec.json.encode(
            Accepted(
                id=job.id,
                status=Status.QUEUED if self.due is None else Status.SCHEDULED,
                channel=job.channel,
                priority=job.priority,
                created_at=created_at.isoformat(),
                send_at=None if self.due is None else self.due.isoformat(),
            )
        )

    def row(self) -> NewNotification:
        job = self.job
        return NewNotification(
            id=job.id,
            tenant_id=job.tenant_id,
            channel=job.channel,
            recipient=job.recipient,
            payload_json=msgspec.json.encode(job.payload),
            priority=job.priority,
            max_attempts=job.max_attempts,
            metadata_json=msgspec.json.encode(self.metadata or {}),
            fallback_json=msgspec.json.encode(job.fallback),
            send_at=self.due or self.send_at,
            scheduled=self.due is not None,
        )

    async def insert(self) -> datetime:
        return await self.store.insert(self.row())

    async def insert_keyed(self, conn: Connection, answer: Remembered) -> bool:
        return await self.store.insert_keyed(conn, self.row(), answer)

    async def withdraw(self) -> None:
        await self.store.withdraw(self.job.id)


@dataclass(frozen=True, slots=True)
class _Batch:
    store: BatchStore
    batch: NewBatch
    results: list[ItemResult]
    origin: Origin | None = None

    @property
    def location(self) -> None:
        return None  # a batch has no resource of its own to read back

    @property
    def streamed(self) -> list[Job]:
        return [self.job]  # its fan-out runs now; the items' own due times are kept on the batch

    @property
    def indexed(self) -> list[tuple[Job, datetime]]:
        return []

    @property
    def job(self) -> Job:
        job = fanout_job(self.batch.id, self.batch.tenant_id, self.batch.priority)
        return msgspec.structs.replace(job, origin=self.origin)

    def render(self, created_at: datetime) -> bytes:
        accepted = len(self.batch.items)
        return msgspec.json.encode(
            BatchAccepted(
                batch_id=self.batch.id,
                accepted=accepted,
                rejected=len(self.results) - accepted,
                items=self.results,
            )
        )

    async def insert(self) -> datetime:
        await self.store.insert(self.batch)
        return datetime.min  # unused: a batch's answer carries no time

    async def insert_keyed(self, conn: Connection, answer: Remembered) -> bool:
        return await self.store.insert_keyed(conn, self.batch, answer)

    async def withdraw(self) -> None:
        await self.store.withdraw(self.batch.id)


class AcceptService:
    def __init__(
        self,
        notifications: NotificationStore,
        batches: BatchStore,
        keys: IdempotencyStore,
        publisher: Publisher,
        metrics: Metrics,
        due_index: DueIndex | None = None,
        *,
        group_commit: bool = True,
    ) -> None:
        """``group_commit=False`` writes each notification by itself, through the store's own
        ``insert``/``insert_keyed``: for a store that adds to them (the cron leader's fence)."""
        self._notifications = notifications
        self._batches = batches
        self._keys = keys
        self._publisher = publisher
        self._metrics = metrics
        self._group: GroupCommit[NotificationCommit] | None = (
            GroupCommit(notifications, keys, self._commit, self._stream_group)
            if group_commit
            else None
        )
        self._due_index = due_index

    async def notification(
        self,
        job: Job,
        metadata: dict[str, str] | None,
        key: IdempotencyKey | None,
        when: tuple[datetime | None, datetime | None] = (None, None),
    ) -> Answer:
        """Commit and stream one notification (``job.kind`` is a notification). ``when``: the
        time the client asked for and the due time (None: at once), if any."""
        check_streamable(job)
        attributes: dict[str, tracing.Value] = {
            "pulse.notification.id": job.id,
            "pulse.channel": job.channel,
        }
        with _accept_span(job.tenant_id, attributes) as span:
            job = msgspec.structs.replace(job, origin=_origin(span))
            send_at, due = when
            commit = NotificationCommit(self._notifications, job, metadata, due, send_at)
            if self._group is None or commit.row().send_at:  # alone: the group's rows are due now
                answer = await self._accept(commit, key)
            else:
                answer = await self._group.commit(commit, key)
            span.set("pulse.outcome", "replayed" if answer.replayed else "accepted")
            logger.debug("%s %s (%s)", _verb(answer), job.id, job.channel)
        if not answer.replayed:
            self._metrics.count_accepted([(job.channel, job.priority)])
        return answer

    async def batch(
        self, items: list[BatchItem], results: list[ItemResult], batch_id: str, tenant_id: str,
        key: IdempotencyKey | None,
    ) -> Answer:  # fmt: skip
        """Commit the valid ``items`` whole and stream its fan-out job; ``results`` answers
        every item of the request (its id, or its errors)."""
        priority = min(item.priority for item in items)
        batch = NewBatch(id=batch_id, tenant_id=tenant_id, items=items, priority=priority)
        attributes: dict[str, tracing.Value] = {"pulse.batch.id": batch_id}
        with _accept_span(tenant_id, attributes | {"pulse.batch.items": len(items)}) as span:
            commit = _Batch(self._batches, batch, results, _origin(span))
            answer = await self._accept(commit, key)
            span.set("pulse.outcome", "replayed" if answer.replayed else "accepted")
            logger.debug("%s batch %s (%d items)", _verb(answer), batch_id, len(items))
        if not answer.replayed:  # every item counts, as one sent alone would
            self._metrics.count_accepted((item.channel, item.priority) for item in items)
        return answer

    async def commit(self, commit: _Commit, key: IdempotencyKey | None) -> Answer:
        """Accept another kind of commit (a task's: services/tasks.py) on the same path."""
        return await self._accept(commit, key)

    async def _accept(self, commit: _Commit, key: IdempotencyKey | None) -> Answer:
        answer = await self._commit(commit, key)
        if not answer.replayed:
            await self._stream(commit, withdraw=key is None)
        return answer

    async def _commit(self, commit: _Commit, key: IdempotencyKey | None) -> Answer:
        """Commit one request by itself (a batch; a notification its group could not write)."""
        if key is None:
            return Answer(202, commit.render(await commit.insert()), commit.location)
        return await self._commit_keyed(commit, key)

    async def _commit_keyed(self, commit: _Commit, key: IdempotencyKey) -> Answer:
        async with self._keys.claim(commit.job.tenant_id, key.value, key.fingerprint) as claim:
            if isinstance(claim, Busy):
                raise KeyBusy(STILL_BUSY)
            if isinstance(claim, Existing):
                return replay(claim)
            answer = Answer(202, commit.render(claim.now), commit.location)
            remembered = Remembered(
                key.value,
                key.fingerprint,
                answer.status,
                answer.body,
                answer.location,
                self._keys.retention_s,
            )
            if not await commit.insert_keyed(claim.connection, remembered):
                raise KeyBusy(JUST_ANSWERED)
        return answer

    async def _stream(self, commit: _Commit, *, withdraw: bool) -> None:
        """Stream the committed job (see ``_unstreamed`` when Redis is down)."""
        try:
            if streamed := commit.streamed:
                await self._publisher.publish(streamed)
            if indexed := commit.indexed:  # due later: streamed by a worker's scheduler
                assert self._due_index is not None, "scheduled sends need a DueIndex"
                await self._due_index.schedule(indexed)
        except TRANSIENT_REDIS_ERRORS as exc:
            raise await self._unstreamed(commit, withdraw, exc) from None

    async def _stream_group(
        self, commits: list[tuple[NotificationCommit, bool]]
    ) -> list[BaseException | None]:
        """Stream a group's committed jobs in one round trip; each one's error (None: done)."""
        results = await self._publisher.publish_each([commit.job for commit, _ in commits])
        errors: list[BaseException | None] = []
        for (commit, withdraw), result in zip(commits, results, strict=True):
            if isinstance(result, TRANSIENT_REDIS_ERRORS):
                errors.append(await self._unstreamed(commit, withdraw, result))
            else:
                errors.append(result if isinstance(result, BaseException) else None)
        return errors

    async def _unstreamed(self, commit: _Commit, withdraw: bool, exc: BaseException) -> Unavailable:
        """Redis is down. If nobody can have seen this commit, take it back (503: the client's
        retry is the only copy); should the take-back fail too, the reconciler streams the
        commit later: never lost, at worst sent twice. A keyed commit stays (a twin may have
        been answered with it): 503, and the reconciler streams it."""
        job = commit.job
        if not withdraw:
            logger.warning("Redis unreachable for %s (%s); kept for the reconciler", job.id, exc)
            return Unavailable(
                "the queue is unreachable; the request is recorded and will be queued when"
                " it is back (a retry with the same Idempotency-Key answers 202)"
            )
        logger.warning("Redis unreachable for %s (%s); withdrawing it", job.id, exc)
        try:
            await commit.withdraw()
        except TRANSIENT_DB_ERRORS:
            logger.error("could not withdraw %s; the reconciler will enqueue it", job.id)
        return Unavailable("the queue is unreachable; nothing was accepted")


def _accept_span(
    tenant_id: str, attributes: dict[str, tracing.Value]
) -> AbstractContextManager[tracing.Span]:
    return tracing.child(
        "pulse.accept", kind="producer", attributes={"pulse.tenant.id": tenant_id, **attributes}
    )


def _verb(answer: Answer) -> str:
    return "replayed the answer for" if answer.replayed else "accepted"


def _origin(span: tracing.Span) -> Origin:
    """What the job carries to the worker: this request's id and the accept span."""
    ident = logs.request_id.get()
    return Origin(request_id=None if ident == "-" else ident, trace=span.context)
