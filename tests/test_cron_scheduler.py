"""The cron scheduler against real Redis and PostgreSQL, with its clock injected: one leader,
each occurrence created once (two schedulers, a fire repeated after a crash), a deposed
leader fenced out, misfires skipped or caught up."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.leader_lock import LeaderLock
from pulse.queue.publisher import Publisher
from pulse.runtime.cron import CronScheduler, CronSettings
from pulse.services.accept import AcceptService
from pulse.store.batches import BatchStore
from pulse.store.cron_fence import CronFences, FencedNotifications
from pulse.store.idempotency import IdempotencyStore
from pulse.store.schedules import Schedule, ScheduleStore
from pulse.store.tenants import NewTenant, TenantStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)
TEMPLATE = {"recipient": "ops", "channel": "log", "payload": {"message": "tick"}, "priority": 2}


def scheduler(settings: Settings, redis: Redis, pool: asyncpg.Pool, name: str) -> CronScheduler:
    """A scheduler as a worker builds one, with the clock stopped at ``NOW``."""
    keys = QueueKeys(settings.key_prefix)
    accept = AcceptService(
        FencedNotifications(pool), BatchStore(pool), IdempotencyStore(pool, 3600),
        Publisher(redis, keys), Metrics(), group_commit=False,
    )  # fmt: skip
    lock = LeaderLock(redis, keys.lock("cron"), name, 10_000)
    return CronScheduler(
        lock, CronFences(pool), ScheduleStore(pool), accept, settings.key_prefix,
        CronSettings(lock_ttl_s=10, misfire_grace_s=60), clock=lambda: NOW,
    )  # fmt: skip


async def new_schedule(
    pool: asyncpg.Pool, settings: Settings, tenant: NewTenant, *, misfire: str = "catch_up",
    limit: int = 5, cursor: datetime = NOW - timedelta(minutes=10, seconds=30),
) -> Schedule:  # fmt: skip
    schedule = Schedule(
        id=str(uuid7()), tenant_id=tenant.tenant_id, cron="* * * * *", timezone="UTC",
        notification=msgspec.json.encode(TEMPLATE).decode(), starts_at=None, ends_at=None,
        misfire=misfire, catch_up_limit=limit, paused=False, cursor_at=cursor,
        next_fire_at=cursor + timedelta(seconds=30),
    )  # fmt: skip
    created = await ScheduleStore(pool).create(schedule, settings.key_prefix)
    assert created is not None
    return created


async def created(pool: asyncpg.Pool, schedule_id: str) -> dict[str, int]:
    """How many notifications each occurrence of the schedule created."""
    rows = await pool.fetch(
        "SELECT metadata->>'pulse.occurrence' AS at, count(*) AS n FROM notifications"
        " WHERE metadata->>'pulse.schedule_id' = $1 GROUP BY 1",
        schedule_id,
    )
    return {row["at"]: row["n"] for row in rows}


def minutes(*values: int) -> set[str]:
    return {(NOW.replace(second=0) - timedelta(minutes=m)).isoformat() for m in values}


async def test_one_leader_fires_each_occurrence_once_and_catches_up_to_its_bound(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given a minutely schedule last handled at 09:50 and two schedulers at 10:00:30
    schedule = await new_schedule(pool, settings, tenant, limit=5)
    first, second = (scheduler(settings, redis, pool, n) for n in ("a", "b"))
    # When both tick, twice
    fired = [await first.tick(), await second.tick(), await first.tick(), await second.tick()]
    # Then one leads and fires 10:00 (on time) and the latest five missed (09:55..09:59)
    assert fired == [6, 0, 0, 0]
    counts = await created(pool, schedule.id)
    assert set(counts) == minutes(0, 1, 2, 3, 4, 5)
    assert set(counts.values()) == {1}
    row = await ScheduleStore(pool).get(tenant.tenant_id, schedule.id)
    assert row is not None
    assert (row.fired, row.skipped) == (6, 4)
    assert row.cursor_at == NOW.replace(second=0)
    assert row.next_fire_at == NOW.replace(second=0) + timedelta(minutes=1)
    await first.resign()


async def test_skip_fires_only_what_is_on_time(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    schedule = await new_schedule(pool, settings, tenant, misfire="skip", limit=1)
    leader = scheduler(settings, redis, pool, "a")
    assert await leader.tick() == 1
    assert set(await created(pool, schedule.id)) == minutes(0)
    row = await ScheduleStore(pool).get(tenant.tenant_id, schedule.id)
    assert row is not None
    assert (row.fired, row.skipped) == (1, 9)
    await leader.resign()


async def test_a_fire_repeated_after_a_crash_creates_nothing_twice(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given 10:00's notification created, and the cursor behind it (as a restore from a
    # backup, or a Pulse before the cursor moved in the fire's own transaction, leaves it)
    schedule = await new_schedule(pool, settings, tenant, misfire="skip", limit=1)
    dead = scheduler(settings, redis, pool, "dead")
    assert await dead.tick() == 1
    await pool.execute(
        "UPDATE schedules SET cursor_at = $2, next_fire_at = $3, fired = 0 WHERE id = $1",
        schedule.id, NOW - timedelta(minutes=1), NOW.replace(second=0),
    )  # fmt: skip
    await redis.delete(QueueKeys(settings.key_prefix).lock("cron"))  # its lock expired
    # When the standby takes over and fires the same occurrence again
    standby = scheduler(settings, redis, pool, "standby")
    assert await standby.tick() == 1
    # Then the occurrence has still one notification, and the cursor moved on
    assert await created(pool, schedule.id) == dict.fromkeys(minutes(0), 1)
    row = await ScheduleStore(pool).get(tenant.tenant_id, schedule.id)
    assert row is not None
    assert row.cursor_at == NOW.replace(second=0)
    await standby.resign()


async def test_a_deposed_leader_cannot_fire(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given a leader, paused past its lock's expiry, and a successor that took over
    old = scheduler(settings, redis, pool, "old")
    assert await old.tick() == 0  # leads, nothing due yet
    paused_fence = old.fence
    assert paused_fence is not None
    await redis.delete(QueueKeys(settings.key_prefix).lock("cron"))  # the lock expired
    successor = scheduler(settings, redis, pool, "successor")
    await successor.tick()
    assert successor.fence is not None
    assert successor.fence.token > paused_fence.token
    # (one schedule whose misfires move its cursor first, one that goes straight to firing)
    skipping = await new_schedule(pool, settings, tenant, misfire="skip", limit=1)
    firing = await new_schedule(pool, settings, tenant, misfire="catch_up", limit=10)
    # When the old leader wakes up and fires what it believes is due (it skips its renewal)
    due = {s.id: s for s in await ScheduleStore(pool).due(settings.key_prefix, NOW, 100)}
    fired = [await old.handle(due[s.id]) for s in (skipping, firing)]
    # Then nothing was created (the commit found a newer token) and it knows it is deposed
    assert fired == [0, 0]
    assert await created(pool, skipping.id) == {}
    assert await created(pool, firing.id) == {}
    assert old.fence is None
    # And the successor fires them, each occurrence once
    assert await successor.tick() == 1 + 10
    assert await created(pool, skipping.id) == dict.fromkeys(minutes(0), 1)
    assert await created(pool, firing.id) == dict.fromkeys(minutes(*range(10)), 1)
    await successor.resign()


async def test_a_schedule_paused_while_its_fire_was_planned_creates_nothing(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given a leader that read a due schedule, which is paused before it fires
    leader = scheduler(settings, redis, pool, "a")
    assert await leader.tick() == 0  # leads; nothing due yet
    read = await new_schedule(pool, settings, tenant, misfire="catch_up", limit=10)
    await pool.execute(
        "UPDATE schedules SET paused = true, version = version + 1 WHERE id = $1", read.id
    )
    # When it fires from what it read
    fired = await leader.handle(read)
    # Then nothing was created, and the schedule is as the pause left it
    assert fired == 0
    assert await created(pool, read.id) == {}
    row = await ScheduleStore(pool).get(tenant.tenant_id, read.id)
    assert row is not None
    assert (row.cursor_at, row.fired) == (read.cursor_at, 0)
    await leader.resign()


async def test_paused_and_ended_schedules_do_not_fire(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    store = ScheduleStore(pool)
    paused = await new_schedule(pool, settings, tenant)
    await pool.execute("UPDATE schedules SET paused = true WHERE id = $1", paused.id)
    ended = await new_schedule(pool, settings, tenant)
    await pool.execute(
        "UPDATE schedules SET ends_at = $2 WHERE id = $1", ended.id, NOW - timedelta(minutes=8)
    )
    leader = scheduler(settings, redis, pool, "a")
    await leader.tick()
    assert await created(pool, paused.id) == {}
    assert set(await created(pool, ended.id)) == minutes(9, 8)  # caught up until its end
    row = await store.get(tenant.tenant_id, ended.id)
    assert row is not None
    assert row.next_fire_at is None
    assert await leader.tick() == 0
    await leader.resign()


async def test_each_scheduler_fires_only_its_own_deployments_schedules(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    schedule = await new_schedule(pool, settings, tenant)
    elsewhere = msgspec.structs.replace(settings, key_prefix=f"pt{secrets.token_hex(4)}")
    other = scheduler(elsewhere, redis, pool, "other")
    assert await other.tick() == 0
    assert await created(pool, schedule.id) == {}
    await other.resign()


class Stopwatch:
    """The scheduler's clocks in simulated time, moved only by work: each fire takes
    ``per_fire_s`` (a busy database), so a long tick is long on both of its clocks."""

    def __init__(self, per_fire_s: float) -> None:
        self.per_fire_s = per_fire_s
        self.elapsed_s = 0.0

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.elapsed_s)

    def monotonic(self) -> float:
        return self.elapsed_s


class SlowAccept(AcceptService):
    """The real accept service (real PostgreSQL and Redis); each call moves the stopwatch."""

    stopwatch: Stopwatch

    async def notification(self, *args: Any, **kwargs: Any) -> Any:
        self.stopwatch.elapsed_s += self.stopwatch.per_fire_s
        return await super().notification(*args, **kwargs)


async def test_one_tenants_backlog_does_not_make_anothers_occurrence_late(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given tenant A's minutely schedule, due on time now (10:00 at 10:00:30)
    on_time = await new_schedule(
        pool, settings, tenant, misfire="skip", limit=1, cursor=NOW - timedelta(seconds=60)
    )
    # And tenant B's 20 minutely schedules started two days ago, each catching up 10
    other = await TenantStore(pool).create(f"backlog-{secrets.token_hex(4)}")
    backlog = [
        await new_schedule(pool, settings, other, limit=10, cursor=NOW - timedelta(days=2))
        for _ in range(20)
    ]
    # And a leader whose every fire takes half a second (B's backlog alone: ~110 s of fires)
    stopwatch = Stopwatch(per_fire_s=0.5)
    keys = QueueKeys(settings.key_prefix)
    accept = SlowAccept(
        FencedNotifications(pool), BatchStore(pool), IdempotencyStore(pool, 3600),
        Publisher(redis, keys), Metrics(), group_commit=False,
    )  # fmt: skip
    accept.stopwatch = stopwatch
    leader = CronScheduler(
        LeaderLock(redis, keys.lock("cron"), "leader", 10_000), CronFences(pool),
        ScheduleStore(pool), accept, settings.key_prefix,
        CronSettings(lock_ttl_s=10, misfire_grace_s=60),
        clock=stopwatch.now, monotonic=stopwatch.monotonic,
    )  # fmt: skip
    rival = scheduler(settings, redis, pool, "rival")
    # When the leader ticks until nothing is due
    ticks = 0
    while await leader.tick():
        ticks += 1
        # Then it leads throughout (each tick within its budget, the lock renewed)
        assert leader.fence is not None
        assert await rival.tick() == 0
        assert ticks < 1000
    # And A's first occurrence fired on time in the first tick, and none of A's was skipped
    row = await ScheduleStore(pool).get(tenant.tenant_id, on_time.id)
    assert row is not None
    assert row.skipped == 0
    fired_for_a = await created(pool, on_time.id)
    assert NOW.replace(second=0).isoformat() in fired_for_a
    assert set(fired_for_a.values()) == {1}
    assert row.fired == len(fired_for_a)
    # And B's backlog drained: each schedule caught up its 10 missed occurrences, each once
    for schedule in backlog:
        counts = await created(pool, schedule.id)
        assert set(counts.values()) == {1}
        assert len(counts) >= 10 + 1
    assert leader.fence is not None
    await leader.resign()
