"""Schedules whose template is a task job: created and checked over HTTP as ``POST /api/jobs/``
checks a job, fired by the cron leader through the task accept path under its fence (one job
per occurrence, run by a task worker), and nothing created by a deposed leader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.metrics import Metrics
from pulse.queue.job_cancels import JobCancels
from pulse.queue.keys import QueueKeys
from pulse.queue.leader_lock import LeaderLock
from pulse.queue.publisher import Publisher
from pulse.runtime.cron import CronScheduler, CronSettings
from pulse.runtime.worker import build_worker
from pulse.services.accept import AcceptService
from pulse.services.tasks import TaskService
from pulse.store.batches import BatchStore
from pulse.store.cron_fence import CronFences, FencedNotifications
from pulse.store.idempotency import IdempotencyStore
from pulse.store.jobs import JobStore
from pulse.store.schedules import Schedule, ScheduleStore
from pulse.store.tenants import NewTenant
from tests import tasks_example
from tests.conftest import Client, RunningWorker
from tests.test_tasks import _until_registered, finished, start_task_worker, task_worker

pytestmark = pytest.mark.integration
__all__ = ["start_task_worker", "task_worker"]  # fixtures used here

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
ADD = {"task": "example.add", "args": {"a": 2, "b": 3}}


@pytest.fixture
async def runner(settings: Settings, redis: Redis, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """A worker serving the example tasks whose own cron scheduler is off, so the test's
    schedulers (with their clocks stopped) are the only ones that lead."""
    instance = build_worker(
        settings, redis, pool, {}, Metrics(), [tasks_example.tasks], serve_channels=False
    )
    instance.cron = None
    stop = asyncio.Event()
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    await _until_registered(running)
    yield
    await running.shutdown()


def scheduler(settings: Settings, redis: Redis, pool: asyncpg.Pool, name: str) -> CronScheduler:
    """A scheduler as a worker builds one (``build_cron``), its clock stopped at ``NOW``."""
    keys = QueueKeys(settings.key_prefix)
    accept = AcceptService(
        FencedNotifications(pool), BatchStore(pool), IdempotencyStore(pool, 3600),
        Publisher(redis, keys), Metrics(), group_commit=False,
    )  # fmt: skip
    tasks = TaskService(
        accept, FencedNotifications(pool), JobStore(pool), JobCancels(redis, keys), Metrics()
    )
    lock = LeaderLock(redis, keys.lock("cron"), name, 10_000)
    return CronScheduler(
        lock, CronFences(pool), ScheduleStore(pool), accept, settings.key_prefix,
        CronSettings(lock_ttl_s=10, misfire_grace_s=60), clock=lambda: NOW, tasks=tasks,
    )  # fmt: skip


async def job_schedule(
    pool: asyncpg.Pool, settings: Settings, tenant: NewTenant, minutes_missed: int = 0
) -> Schedule:
    cursor = NOW.replace(second=0) - timedelta(minutes=minutes_missed, seconds=1)
    schedule = Schedule(
        id=str(uuid7()), tenant_id=tenant.tenant_id, cron="* * * * *", timezone="UTC",
        notification=None, job=msgspec.json.encode(ADD).decode(), starts_at=None, ends_at=None,
        misfire="catch_up", catch_up_limit=10, paused=False, cursor_at=cursor,
        next_fire_at=cursor + timedelta(seconds=1),
    )  # fmt: skip
    created = await ScheduleStore(pool).create(schedule, settings.key_prefix)
    assert created is not None
    return created


async def jobs_of(pool: asyncpg.Pool, schedule_id: str) -> dict[str, str]:
    """The task jobs the schedule enqueued: Idempotency-Key -> job id."""
    rows = await pool.fetch(
        "SELECT payload->>'key' AS key, id::text AS id FROM notifications"
        " WHERE channel = 'task:example.add' AND payload->>'key' LIKE $1",
        f"schedule:{schedule_id}:%",
    )
    return {row["key"]: row["id"] for row in rows}


async def problem_at(client: Client, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    pointer: str = (await response.json(content_type=None))["errors"][0]["pointer"]
    return pointer


async def test_a_job_schedule_is_created_and_read_back(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    body = {"cron": "*/5 * * * *", "job": ADD | {"priority": 1}}
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["notification"] is None
    assert created["job"] == ADD | {"priority": 1, "max_attempts": None}
    got = await (await client.get(f"/api/schedules/{created['id']}", headers=auth)).json()
    assert got["job"] == created["job"]
    assert len(got["next_fire_times"]) == 5
    # a job schedule's job can be changed, and is checked again
    changed = ADD | {"args": {"a": 7}}
    patched = await client.patch(
        f"/api/schedules/{created['id']}", json={"job": changed}, headers=auth
    )
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["job"]["args"] == {"a": 7}
    bad = await client.patch(
        f"/api/schedules/{created['id']}", json={"job": {"task": "example.add"}}, headers=auth
    )
    assert bad.status == 422
    assert (await bad.json(content_type=None))["errors"][0]["pointer"] == "/job/args/a"


async def test_a_job_schedule_is_checked_as_a_job_is(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    log = {"recipient": "ops", "channel": "log", "payload": {"message": "x"}}
    cron = {"cron": "0 9 * * *"}
    assert await problem_at(client, auth, cron) == "/notification"
    assert await problem_at(client, auth, cron | {"notification": log, "job": ADD}) == "/job"
    unknown = {"task": "example.nothing"}
    assert await problem_at(client, auth, cron | {"job": unknown}) == "/job/task"
    wrong = ADD | {"args": {"a": "two"}}
    assert await problem_at(client, auth, cron | {"job": wrong}) == "/job/args/a"
    extra = ADD | {"args": {"a": 1, "c": 2}}
    assert await problem_at(client, auth, cron | {"job": extra}) == "/job/args/c"
    assert await problem_at(client, auth, cron | {"job": ADD | {"after": []}}) == "/job/after"
    wide = ADD | {"args": {"a": 2**70}}
    assert await problem_at(client, auth, cron | {"job": wide}) == "/job/args/a"


class TestArgsAsBigAsAJobs:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(settings, max_result_bytes=1000)

    async def test_a_job_schedules_args_are_capped_as_a_jobs_are(
        self, client: Client, auth: dict[str, str], task_worker: RunningWorker
    ) -> None:
        # args as big as POST /api/jobs/ refuses (PULSE_MAX_RESULT_BYTES): refused here too
        huge = {"task": "example.greet", "args": {"name": "n" * 2000}}
        assert await problem_at(client, auth, {"cron": "0 9 * * *", "job": huge}) == "/job/args"


async def test_a_fire_enqueues_one_job_per_occurrence_that_a_task_worker_runs(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant,
    client: Client, auth: dict[str, str], runner: None,
) -> None:  # fmt: skip
    # Given a minutely job schedule that missed one occurrence, and two schedulers
    schedule = await job_schedule(pool, settings, tenant, minutes_missed=1)
    first, second = (scheduler(settings, redis, pool, n) for n in ("a", "b"))
    # When both tick twice
    fired = [await first.tick(), await second.tick(), await first.tick(), await second.tick()]
    # Then each occurrence enqueued exactly one job, keyed by schedule and occurrence
    assert fired == [2, 0, 0, 0]
    jobs = await jobs_of(pool, schedule.id)
    occurrences = [NOW.replace(second=0) - timedelta(minutes=m) for m in (0, 1)]
    assert set(jobs) == {f"schedule:{schedule.id}:{at.isoformat()}" for at in occurrences}
    # And the task worker runs them
    for job_id in jobs.values():
        job = await finished(client, auth, job_id)
        assert job["status"] == "succeeded"
        assert job["result"] == {"sum": 5, "attempt": 1}
    row = await ScheduleStore(pool).get(tenant.tenant_id, schedule.id)
    assert row is not None
    assert row.fired == 2
    await first.resign()


async def test_a_deposed_leader_enqueues_no_job(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant,
    runner: None,
) -> None:  # fmt: skip
    # Given a leader paused past its lock's expiry, and a successor that took over
    old = scheduler(settings, redis, pool, "old")
    assert await old.tick() == 0
    await redis.delete(QueueKeys(settings.key_prefix).lock("cron"))
    successor = scheduler(settings, redis, pool, "successor")
    await successor.tick()
    schedule = await job_schedule(pool, settings, tenant)
    # When the old leader fires what it believes is due
    due = {s.id: s for s in await ScheduleStore(pool).due(settings.key_prefix, NOW, 100)}
    assert await old.handle(due[schedule.id]) == 0
    # Then no job exists, and the successor enqueues the one occurrence once
    assert await jobs_of(pool, schedule.id) == {}
    assert old.fence is None
    assert await successor.tick() == 1
    assert len(await jobs_of(pool, schedule.id)) == 1
    await successor.resign()


async def test_a_workers_own_cron_leader_enqueues_a_job_schedules_missed_occurrences(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, task_worker: RunningWorker
) -> None:
    # Given a job schedule created over HTTP that started ten minutes ago and catches up 2
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    body = {"cron": "* * * * *", "job": ADD, "starts_at": since, "misfire": "catch_up",
            "catch_up_limit": 2}  # fmt: skip
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 201, await response.text()
    schedule_id = (await response.json())["id"]
    # When the worker's own cron leader (as build_worker wires it) ticks
    document: dict[str, Any] = {}
    for _ in range(400):
        document = await (await client.get(f"/api/schedules/{schedule_id}", headers=auth)).json()
        if document["fired"] >= 2:
            break
        await asyncio.sleep(0.05)
    # Then it enqueued one job per occurrence fired (counted in one snapshot), and each ran
    assert document["fired"] >= 2
    counts = await pool.fetchrow(
        "SELECT fired, (SELECT count(*) FROM notifications WHERE payload->>'key' LIKE"
        " 'schedule:' || $1 || ':%') FROM schedules WHERE id = $1::uuid",
        schedule_id,
    )
    assert counts is not None
    assert counts[1] == counts[0]  # jobs enqueued == occurrences fired
    jobs = await jobs_of(pool, schedule_id)
    for job_id in jobs.values():
        assert (await finished(client, auth, job_id))["status"] == "succeeded"
