"""The cron scheduler: every worker runs one, one of them leads and fires the schedules.

Leadership is a Redis lock (``LeaderLock``) renewed every tick; a standby polls it and takes
over within the lock's ttl after a leader dies. On take-over the leader gets a new fencing
token in PostgreSQL; each occurrence commits only under that token (``cron_fence.py``), so a
leader paused past its lock's expiry commits nothing after its successor took over.

Each occurrence is accepted through the accept service with the Idempotency-Key
``schedule:<id>:<occurrence>``; the transaction that commits its notification also moves the
schedule's cursor past it (``FencedNotifications``), so the notification exists exactly when
the cursor says the occurrence fired. A leader killed after that commit but before streaming
leaves it to the reconciler; a successor that fires an occurrence again (its cursor not yet
moved) gets the first answer back and moves the cursor: one notification per occurrence, none
skipped. A schedule that fails in a way no retry mends is logged and the others still fire.

One tick is bounded, so one tenant's backlog cannot make another's occurrences late: it first
fires the schedules whose occurrence is on time (within the misfire grace), then the late ones
(a catch-up backlog), each page taken in turns by tenant; a schedule fires at most
``fires_per_visit`` occurrences a turn (the rest on the next tick), and the tick stops after
``budget_s`` (well under the lock's ttl), renewing the lock between fires when an interval has
passed, so a long tick never loses leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import msgspec
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.cron import Misfire, Plan, Policy, next_times, plan
from pulse.core.errors import InvalidInput, Unavailable
from pulse.core.ids import uuid7
from pulse.core.jobs import JobRequest
from pulse.core.models import Job, JobKind
from pulse.core.timeutil import utcnow
from pulse.core.zones import zone
from pulse.metrics import Metrics
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.job_cancels import JobCancels
from pulse.queue.keys import keys_for
from pulse.queue.leader_lock import LeaderLock
from pulse.queue.publisher import Publisher
from pulse.services.accept import (
    AcceptService,
    Answer,
    IdempotencyKey,
    KeyBusy,
    KeyReused,
    fingerprint,
)
from pulse.services.tasks import TaskService
from pulse.store.batches import BatchStore
from pulse.store.cron_fence import (
    CronFences,
    Deposed,
    Fence,
    FencedNotifications,
    Firing,
    Overtaken,
    current_firing,
)
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.idempotency import IdempotencyStore
from pulse.store.jobs import JobStore
from pulse.store.schedules import (
    Advance,
    JobTemplate,
    NotificationTemplate,
    Schedule,
    ScheduleStore,
)

logger = logging.getLogger("pulse.runtime.cron")
SCHEDULE_METADATA = "pulse.schedule_id"
OCCURRENCE_METADATA = "pulse.occurrence"


class Outcome(enum.Enum):
    """A fire's end: committed with its cursor's move; answered before (by a leader that died
    before moving the cursor, which must move now); or to be planned again."""

    COMMITTED = "committed"
    ANSWERED_BEFORE = "answered before"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class CronSettings:
    lock_ttl_s: float = 10.0
    tick_s: float = 1.0
    misfire_grace_s: float = 60.0
    default_max_attempts: int = 5
    page: int = 100
    fires_per_visit: int = 10  # a schedule's occurrences fired per turn of a tick
    tick_budget_s: float | None = None  # None: a quarter of the lock's ttl

    def __post_init__(self) -> None:
        if min(self.lock_ttl_s, self.tick_s, self.misfire_grace_s, self.fires_per_visit) <= 0:
            raise ValueError(
                "cron lock ttl, tick, misfire grace and fires per visit must be positive"
            )
        if self.tick_budget_s is not None and not 0 < self.tick_budget_s < self.lock_ttl_s / 2:
            raise ValueError("the cron tick budget must be positive and under half the lock ttl")

    @property
    def budget_s(self) -> float:
        """How long one tick fires at most: well under the ttl, so the lock outlives it."""
        return self.tick_budget_s if self.tick_budget_s is not None else self.lock_ttl_s / 4

    @property
    def interval_s(self) -> float:
        """How often to tick: renewals come at least three times per ttl."""
        return min(self.tick_s, self.lock_ttl_s / 3)


def idempotency_key(schedule_id: str, at: datetime) -> IdempotencyKey:
    """The same for every scheduler that fires this occurrence, whatever the schedule's body."""
    occurrence = at.isoformat()
    return IdempotencyKey(
        f"schedule:{schedule_id}:{occurrence}", fingerprint(["schedule", schedule_id, occurrence])
    )


class CronScheduler:
    def __init__(
        self,
        lock: LeaderLock,
        fences: CronFences,
        schedules: ScheduleStore,
        accept: AcceptService,
        deployment: str,
        settings: CronSettings,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        tasks: TaskService | None = None,
    ) -> None:
        self._tasks = tasks  # enqueues a job schedule's task jobs under the fence
        self._lock = lock
        self._fences = fences
        self._schedules = schedules
        self._accept = accept
        self._deployment = deployment
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._fence: Fence | None = None
        self._valid_until = 0.0  # monotonic time the lock is surely still ours until
        self._renewed_at = 0.0

    @property
    def fence(self) -> Fence | None:
        """The token this scheduler leads under, None while it stands by."""
        return self._fence if self._holding() else None

    async def run(self) -> None:
        try:
            while True:
                started = self._monotonic()
                try:
                    await self.tick()
                except (*TRANSIENT_REDIS_ERRORS, *TRANSIENT_DB_ERRORS) as exc:
                    logger.warning("cron tick skipped: %s", exc)
                # a tick that spent its whole budget left work due: the next starts at once
                busy = self._monotonic() - started >= self._settings.budget_s
                await asyncio.sleep(0 if busy else self._settings.interval_s)
        finally:
            await self.resign()

    async def tick(self) -> int:
        """Lead (take or keep the lock), then fire what is due, on-time occurrences first and
        in turns by tenant, within the tick's budget; how many occurrences fired."""
        if not await self._lead():
            return 0
        deadline = self._monotonic() + self._settings.budget_s
        now = self._clock()
        late_before = now - timedelta(seconds=self._settings.misfire_grace_s)
        fired = 0
        for after, until in ((late_before, now), (None, late_before)):
            if not await self._keep(deadline):
                break
            due = await self._schedules.due(self._deployment, until, self._settings.page, after)
            for schedule in due:
                if not await self._keep(deadline):
                    return fired
                try:
                    fired += await self.handle(schedule, deadline)
                except (*TRANSIENT_REDIS_ERRORS, *TRANSIENT_DB_ERRORS):
                    raise
                except Exception:  # one broken schedule must not keep the others from firing
                    logger.exception("schedule %s could not be handled", schedule.id)
        return fired

    async def resign(self) -> None:
        """Give the lock up (a graceful stop), so a standby takes over at once."""
        if self._fence is None:
            return
        self._fence = None
        with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):
            await self._lock.release()

    def _holding(self) -> bool:
        return self._fence is not None and self._monotonic() < self._valid_until

    async def _keep(self, deadline: float) -> bool:
        """Whether to fire more this tick: budget left, and the lock still ours (renewed when
        an interval has passed since the last renewal)."""
        if self._fence is None or self._monotonic() >= deadline:
            return False
        if self._monotonic() - self._renewed_at >= self._settings.interval_s:
            return await self._lead()
        return self._holding()

    async def _lead(self) -> bool:
        started = self._monotonic()
        if self._fence is not None:
            if not await self._lock.renew():
                logger.warning("cron leadership lost (token %d)", self._fence.token)
                self._fence = None
                return False
            self._valid_until = started + self._settings.lock_ttl_s
            self._renewed_at = started
            return True
        if not await self._lock.acquire():
            return False
        self._valid_until = started + self._settings.lock_ttl_s
        self._renewed_at = started
        try:
            self._fence = await self._fences.take_over(self._deployment, self._lock.holder)
        except BaseException:
            with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):
                await self._lock.release()
            raise
        logger.info("cron leader %s (token %d)", self._lock.holder, self._fence.token)
        return True

    async def handle(self, schedule: Schedule, deadline: float | None = None) -> int:
        """Handle one due schedule: skip what its misfire policy skips, fire the rest in
        order (at most ``fires_per_visit``, and while the tick's budget lasts), moving its
        cursor after each."""
        try:
            tz = zone(schedule.timezone)
        except ValueError:
            logger.error("schedule %s: time zone %s unknown here", schedule.id, schedule.timezone)
            return 0
        now = self._clock()
        todo = plan(
            schedule.cron, tz, schedule.cursor_at, now, schedule.ends_at, self._policy(schedule)
        )

        def advance(cursor: datetime, fired: int = 0, skipped: int = 0) -> Advance:
            upcoming = next_times(schedule.cron, tz, cursor, schedule.ends_at, 1)
            return Advance(
                schedule.id, schedule.version, cursor, upcoming[0] if upcoming else None,
                fired=fired, skipped=skipped,
            )  # fmt: skip

        if not await self._skip(schedule, todo, now, advance):
            return 0
        fired = 0
        for at in todo.fire[: self._settings.fires_per_visit]:
            if fired and deadline is not None and not await self._keep(deadline):
                break
            move = advance(at, fired=1)
            outcome = await self._fire(schedule, at, move)
            if outcome is Outcome.WAIT:
                break
            fired += 1
            if outcome is Outcome.ANSWERED_BEFORE and not await self._advance(move):
                break
        return fired

    async def _skip(
        self, schedule: Schedule, todo: Plan, now: datetime,
        advance: Callable[..., Advance],
    ) -> bool:  # fmt: skip
        """Move past the occurrences the policy skips (or, with nothing to do, past the end)."""
        if todo.skipped_until is not None:
            logger.warning(
                "schedule %s: %d occurrences missed, skipped (last %s)",
                schedule.id, todo.skipped, todo.skipped_until.isoformat(),
            )  # fmt: skip
            return await self._advance(advance(todo.skipped_until, skipped=todo.skipped))
        if not todo.fire:  # due by its row, but nothing left before now or its end
            end = now if schedule.ends_at is None else min(now, schedule.ends_at)
            if end > schedule.cursor_at:
                await self._advance(advance(end))
            return False
        return True

    async def _advance(self, move: Advance) -> bool:
        fence = self.fence
        if fence is None:
            return False
        return await self._schedules.advance(move, fence.deployment, fence.token)

    async def _fire(self, schedule: Schedule, at: datetime, move: Advance) -> Outcome:
        """Accept the occurrence's notification under this leader's fence, its cursor moved
        in the same transaction."""
        fence = self.fence
        if fence is None:
            return Outcome.WAIT
        token = current_firing.set(Firing(fence, move))
        try:
            answer = await self._create(schedule, at)
        except Deposed as exc:
            logger.warning("cron leadership lost while firing: %s", exc)
            self._fence = None
            return Outcome.WAIT
        except (Overtaken, KeyBusy):  # edited or paused meanwhile, or a twin fire running
            return Outcome.WAIT
        except Unavailable:  # committed; the reconciler streams it when Redis is back
            logger.warning("schedule %s at %s: committed, queue unreachable", schedule.id, at)
            return Outcome.COMMITTED
        except (KeyReused, InvalidInput) as exc:  # nothing this occurrence can ever create
            logger.error("schedule %s at %s: not fired: %s", schedule.id, at.isoformat(), exc)
            return Outcome.ANSWERED_BEFORE
        finally:
            current_firing.reset(token)
        logger.info(
            "schedule %s fired %s: %s%s", schedule.id, at.isoformat(), answer.location,
            " (created before)" if answer.replayed else "",
        )  # fmt: skip
        return Outcome.ANSWERED_BEFORE if answer.replayed else Outcome.COMMITTED

    async def _create(self, schedule: Schedule, at: datetime) -> Answer:
        """The occurrence's notification, or its task job (through the task accept path, which
        checks its arguments against the task's schema as published now)."""
        key = idempotency_key(schedule.id, at)
        if schedule.job is None:
            job, metadata = self._job(schedule, at)
            return await self._accept.notification(job, metadata, key)
        if self._tasks is None:
            raise InvalidInput("this scheduler enqueues no task jobs")
        template = msgspec.json.decode(schedule.job, type=JobTemplate)
        request = JobRequest(
            task=template.task, args=template.args, priority=template.priority,
            max_attempts=template.max_attempts,
        )  # fmt: skip
        return await self._tasks.enqueue(schedule.tenant_id, request, key)

    def _job(self, schedule: Schedule, at: datetime) -> tuple[Job, dict[str, str]]:
        template = msgspec.json.decode(schedule.notification or "", type=NotificationTemplate)
        job = Job(
            id=str(uuid7()),
            tenant_id=schedule.tenant_id,
            kind=JobKind.NOTIFICATION,
            channel=template.channel,
            recipient=template.recipient,
            payload=template.payload,
            priority=template.priority,
            max_attempts=template.max_attempts or self._settings.default_max_attempts,
            fallback=tuple(template.fallback or ()),
        )
        metadata = dict(template.metadata or {})
        metadata |= {SCHEDULE_METADATA: schedule.id, OCCURRENCE_METADATA: at.isoformat()}
        return job, metadata

    def _policy(self, schedule: Schedule) -> Policy:
        misfire: Misfire = "catch_up" if schedule.misfire == "catch_up" else "skip"
        grace = timedelta(seconds=self._settings.misfire_grace_s)
        return Policy(misfire, schedule.catch_up_limit, grace)


def build_cron(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, publisher: Publisher,
    metrics: Metrics, holder: str,
) -> CronScheduler:  # fmt: skip
    """A worker's cron scheduler, with an accept service of its own whose notifications commit
    under the leader's fence."""
    keys = keys_for(settings)
    accept = AcceptService(
        FencedNotifications(pool),
        BatchStore(pool),
        IdempotencyStore(pool, settings.idempotency_retention_s),
        publisher,
        metrics,
        group_commit=False,  # the fence lives in FencedNotifications.insert_keyed
    )
    cron_settings = CronSettings(
        lock_ttl_s=settings.cron_lock_ttl_s,
        tick_s=settings.cron_tick_s,
        misfire_grace_s=settings.cron_misfire_grace_s,
        default_max_attempts=settings.default_max_attempts,
    )
    lock = LeaderLock(redis, keys.lock("cron"), holder, int(settings.cron_lock_ttl_s * 1000))
    # task jobs commit through the same fenced store: a job row is a notification row
    tasks = TaskService(
        accept, FencedNotifications(pool), JobStore(pool), JobCancels(redis, keys), metrics
    )
    return CronScheduler(
        lock, CronFences(pool), ScheduleStore(pool), accept, settings.key_prefix, cron_settings,
        tasks=tasks,
    )  # fmt: skip
