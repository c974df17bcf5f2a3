"""Group commit: the notification accepts in flight share one statement per event-loop tick.

Under load, each request's own INSERT and COMMIT (a pool connection and a round trip each) was
the accept path's largest cost. Accepts submitted in the same tick are written together, in one
multi-row statement (the notifications, their ``queued`` audit rows and the Idempotency-Key
answers), and each request is answered once its own row is durable. At most ``MAX_IN_FLIGHT``
groups are written at once; what arrives meanwhile forms the next group (natural batching, no
timer: a request that comes alone is written at the next tick, as before).

Each row gets the answer it would get alone:
- a key held by another request (in another group, another process, or twice in this one): 409;
- a key answered before: its first answer replayed, or 422 for another body;
- a key answered between the claim and the insert: 409.
A group PostgreSQL refuses as a whole (a value it cannot store) is written again row by row,
so only the row at fault fails. An outage fails the group's one transaction: nothing of it is
written, and every request of it gets the error (503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from pulse.core.models import Job
from pulse.services.answers import Answer, IdempotencyKey, KeyBusy, KeyReused, replay
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.idempotency import Busy, Existing, IdempotencyStore, Remembered
from pulse.store.notifications import NewNotification, NotificationStore
from pulse.store.tenants import Connection

logger = logging.getLogger("pulse.services.group_commit")
MAX_IN_FLIGHT = 2  # groups written at once: one on the wire while the next one gathers
CHUNK = 500  # rows per statement: large enough to amortise it, small enough not to stall


class Row(Protocol):
    """One accept as the group writes it (``pulse.services.accept.NotificationCommit``)."""

    @property
    def job(self) -> Job: ...

    @property
    def location(self) -> str | None: ...

    def render(self, created_at: datetime) -> bytes: ...

    def row(self) -> NewNotification: ...


R = TypeVar("R", bound=Row)
Stream = Callable[[list[tuple[R, bool]]], Awaitable[list[BaseException | None]]]
Outcome = Answer | BaseException
Claim = tuple[str, str, bytes]  # tenant, key, fingerprint
STILL_BUSY = "a request with this Idempotency-Key is still being processed"
JUST_ANSWERED = "a request with this Idempotency-Key was answered just now"


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[R]):
    item: R
    key: IdempotencyKey | None
    future: asyncio.Future[Answer]


class GroupCommit(Generic[R]):
    def __init__(
        self,
        notifications: NotificationStore,
        keys: IdempotencyStore,
        alone: Callable[[R, IdempotencyKey | None], Awaitable[Answer]],
        stream: Stream[R],
    ) -> None:
        """``alone`` commits one row by itself: the way back when a group is refused.
        ``stream`` appends the committed rows' jobs, each row with ``withdraw`` (it has no
        key), and gives each row's error (None: streamed)."""
        self._notifications = notifications
        self._keys = keys
        self._alone = alone
        self._stream = stream
        self._waiting: list[_Waiting[R]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, item: R, key: IdempotencyKey | None) -> Answer:
        """Commit and stream ``item`` with the others of this tick; its answer once its row is
        durable and its job streamed (a replay: at once, nothing streamed again)."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, key, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._waiting or self._in_flight >= MAX_IN_FLIGHT:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._waiting and self._in_flight < MAX_IN_FLIGHT:
            group, self._waiting = self._waiting[:CHUNK], self._waiting[CHUNK:]
            self._in_flight += 1
            task = asyncio.ensure_future(self._write(group))
            self._tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        self._schedule()

    async def _write(self, group: list[_Waiting[R]]) -> None:
        try:
            outcomes = await self._streamed(group, await self._outcomes(group))
        except asyncio.CancelledError:  # shutting down: nobody will be answered
            for waiting in group:
                waiting.future.cancel()
            raise
        except Exception as exc:  # a fault below the stores' own: answered (500), none hangs
            outcomes = [exc] * len(group)
        for waiting, outcome in zip(group, outcomes, strict=True):
            _settle(waiting.future, outcome)

    async def _outcomes(self, group: list[_Waiting[R]]) -> list[Outcome]:
        try:
            return await self._group(group)
        except TRANSIENT_DB_ERRORS as exc:  # one transaction: nothing of the group is written
            return [exc] * len(group)
        except Exception as exc:  # refused as a whole: find the row at fault, alone
            if len(group) == 1:
                return [exc]
            logger.info("group of %d refused (%r): row by row", len(group), exc)
            return list(await asyncio.gather(*(self._one(waiting) for waiting in group)))

    async def _one(self, waiting: _Waiting[R]) -> Outcome:
        try:
            return await self._alone(waiting.item, waiting.key)
        except Exception as exc:
            return exc

    async def _streamed(self, group: list[_Waiting[R]], outcomes: list[Outcome]) -> list[Outcome]:
        """Stream the rows committed now (not the replays), all in the same round trip; a row
        that could not be streamed is answered with its error instead."""
        fresh = [i for i, outcome in enumerate(outcomes) if _committed_now(outcome)]
        if fresh:
            items = [(group[i].item, group[i].key is None) for i in fresh]
            for i, error in zip(fresh, await self._stream(items), strict=True):
                if error is not None:
                    outcomes[i] = error
        return outcomes

    async def _group(self, group: list[_Waiting[R]]) -> list[Outcome]:
        decided, claims = _claims(group)
        if not claims:
            return await self._insert(None, group, decided, None)
        async with self._keys.claim_many([claim for _, claim in claims]) as (conn, now, found):
            for (i, _), claim in zip(claims, found, strict=True):
                if claim is not None:
                    decided[i] = _refused(claim)
            return await self._insert(conn, group, decided, now)

    async def _insert(
        self,
        conn: Connection | None,
        group: list[_Waiting[R]],
        decided: dict[int, Outcome],
        now: datetime | None,
    ) -> list[Outcome]:
        """Write every row not ``decided`` yet; each keyed one with its answer, rendered at the
        transaction's time ``now`` (what its ``created_at`` will hold)."""
        todo = [(i, waiting) for i, waiting in enumerate(group) if i not in decided]
        if not todo:
            return [decided[i] for i in range(len(group))]
        answers = [_answer(waiting, now, self._keys.retention_s) for _, waiting in todo]
        rows = [waiting.item.row() for _, waiting in todo]
        written = await self._notifications.insert_many(
            conn, rows, [remembered for _, remembered in answers], self._keys.retention_s
        )
        outcomes = dict(decided)
        for (i, waiting), (answer, _) in zip(todo, answers, strict=True):
            created_at = written.get(waiting.item.job.id)
            if created_at is None:
                outcomes[i] = KeyBusy(JUST_ANSWERED)
            else:
                item = waiting.item
                outcomes[i] = answer or Answer(202, item.render(created_at), item.location)
        return [outcomes[i] for i in range(len(group))]


def _claims(group: list[_Waiting[R]]) -> tuple[dict[int, Outcome], list[tuple[int, Claim]]]:
    """The keys to claim, by position, each (tenant, key) once: a twin in the same group is a
    request with that key still in flight (409), decided at once."""
    decided: dict[int, Outcome] = {}
    claims: list[tuple[int, Claim]] = []
    seen: set[tuple[str, str]] = set()
    for i, waiting in enumerate(group):
        if waiting.key is None:
            continue
        pair = (waiting.item.job.tenant_id, waiting.key.value)
        if pair in seen:
            decided[i] = KeyBusy(STILL_BUSY)
        else:
            seen.add(pair)
            claims.append((i, (*pair, waiting.key.fingerprint)))
    return decided, claims


def _refused(claim: Busy | Existing) -> Outcome:
    """The outcome of a key that is not free: busy (409), or answered before (replay, 422)."""
    if isinstance(claim, Busy):
        return KeyBusy(STILL_BUSY)
    try:
        return replay(claim)
    except KeyReused as exc:
        return exc


def _answer(
    waiting: _Waiting[R], now: datetime | None, retention_s: float
) -> tuple[Answer | None, Remembered | None]:
    key = waiting.key
    if key is None or now is None:
        return None, None
    item = waiting.item
    answer = Answer(202, item.render(now), item.location)
    remembered = Remembered(
        key.value, key.fingerprint, answer.status, answer.body, answer.location, retention_s
    )
    return answer, remembered


def _committed_now(outcome: Outcome) -> bool:
    return isinstance(outcome, Answer) and not outcome.replayed


def _settle(future: asyncio.Future[Answer], outcome: Outcome) -> None:
    """Answer a waiting request; one that gave up (its client left) is skipped."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
