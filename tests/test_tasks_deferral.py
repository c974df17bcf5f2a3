"""Deferred task jobs (``send_at`` / ``delay_s``) on real Redis and PostgreSQL: 'scheduled'
until due, then promoted into the task stream of their priority and run once, not before their
time; cancelled while scheduled, they never run; a lost due-time index is rebuilt."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from pulse.client import AsyncPulseClient, Job, JobSpec
from pulse.core.timeutil import now_ms
from pulse.queue.due import DueIndex
from pulse.queue.keys import QueueKeys
from pulse.runtime.reindex import DueReindexer
from pulse.store.scheduled import ScheduledStore
from pulse.store.tenants import NewTenant
from tests import tasks_example, test_tasks
from tests.conftest import Client, RunningWorker
from tests.queue_view import waiting
from tests.test_tasks import TaskWorkerFactory, _until_registered, enqueue, finished

pytestmark = pytest.mark.integration
start_task_worker = test_tasks.start_task_worker  # the task tests' fixtures
task_worker = test_tasks.task_worker


async def _started_at(pool: asyncpg.Pool, job_id: str) -> datetime:
    """When its first attempt started (the audit's 'delivering' row)."""
    started: datetime = await pool.fetchval(
        "SELECT min(at) FROM audit WHERE notification_id = $1 AND status = 'delivering'", job_id
    )
    return started


async def _statuses(pool: asyncpg.Pool, job_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id", job_id
    )
    return [row["status"] for row in rows]


async def test_a_delayed_job_is_scheduled_then_runs_once_not_before_its_time(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    # Given a worker serving the tasks, When a job is enqueued with delay_s
    accepted = await enqueue(client, auth, "example.add", args={"a": 4, "b": 5}, delay_s=1)
    # Then it is accepted 'scheduled' with its due time
    assert accepted["status"] == "scheduled"
    due = datetime.fromisoformat(accepted["send_at"])
    assert due > datetime.fromisoformat(accepted["created_at"])
    response = await client.get(f"/api/jobs/{accepted['id']}", headers=auth)
    assert (await response.json())["status"] == "scheduled"
    # and once due it runs once, with its result, not before its time
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 9, "attempt": 1}
    assert job["attempts"] == 1
    assert await _started_at(pool, accepted["id"]) >= due
    statuses = await _statuses(pool, accepted["id"])
    assert statuses == ["scheduled", "queued", "delivering", "delivered"]


async def test_send_at_defers_to_that_time(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    accepted = await enqueue(client, auth, "example.add", args={"a": 1}, send_at=at.isoformat())
    assert accepted["status"] == "scheduled"
    assert datetime.fromisoformat(accepted["send_at"]) == at
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert await _started_at(pool, accepted["id"]) >= at


async def test_a_due_time_in_the_past_runs_at_once(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    accepted = await enqueue(client, auth, "example.add", args={"a": 1}, send_at=past)
    assert accepted["status"] == "queued"
    assert accepted.get("send_at") is None
    assert (await finished(client, auth, accepted["id"]))["status"] == "succeeded"


async def test_a_scheduled_job_cancelled_never_runs(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    # Given a job due in half a second, When it is cancelled while scheduled
    accepted = await enqueue(client, auth, "example.add", args={"a": 1}, delay_s=0.5)
    response = await client.post(f"/api/jobs/{accepted['id']}/cancel", headers=auth)
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    # Then, after its due time and a job enqueued later has run, it has not started
    later = await enqueue(client, auth, "example.add", args={"a": 2}, delay_s=1)
    assert (await finished(client, auth, later["id"]))["status"] == "succeeded"
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0
    assert job["started_at"] is None
    assert "delivering" not in await _statuses(pool, accepted["id"])


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"send_at": "2030-01-01T00:00:00Z", "delay_s": 5}, "/delay_s"),
        ({"delay_s": -1}, "/delay_s"),
        ({"delay_s": 10 * 365 * 86_400}, "/delay_s"),
        ({"send_at": "2030-01-01T00:00:00"}, "/send_at"),  # no offset
        ({"send_at": "soon"}, "/send_at"),
    ],
)
async def test_a_bad_due_time_is_a_422_naming_the_field(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, body: dict[str, Any],
    pointer: str,
) -> None:  # fmt: skip
    response = await client.post(
        "/api/jobs/", json={"task": "example.add", "args": {"a": 1}, **body}, headers=auth
    )
    assert response.status == 422
    problem = await response.json()
    assert response.content_type == "application/problem+json"
    assert pointer in str(problem), problem


async def test_a_job_after_others_cannot_also_be_deferred(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    parent = await enqueue(client, auth, "example.add", args={"a": 1})
    body = {"task": "example.add", "args": {"a": 1}, "after": [parent["id"]], "delay_s": 5}
    response = await client.post("/api/jobs/", json=body, headers=auth)
    assert response.status == 422
    assert "/delay_s" in str(await response.json())


async def test_a_deferred_task_is_promoted_into_its_task_stream(
    client: Client, auth: dict[str, str], start_task_worker: TaskWorkerFactory,
    redis: Redis, keys: QueueKeys,
) -> None:  # fmt: skip
    # Given the task registered by a worker that has stopped since
    first = start_task_worker()
    await _until_registered(first)
    await first.shutdown()
    accepted = await enqueue(client, auth, "example.add", args={"a": 1}, delay_s=0.2, priority=3)
    index = DueIndex(redis, keys)
    assert await index.due_of(accepted["id"], 3, task=True) is not None
    assert await index.due_of(accepted["id"], 3) is None
    # When it is due and promoted
    await asyncio.sleep(0.3)
    promoted = await index.promote(now_ms(), 10)
    # Then it is in the task stream of its priority, not in the notification stream
    assert [job_id for job_id, _ in promoted.moved] == [accepted["id"]]
    assert await redis.xlen(keys.task_stream(3)) == 1
    assert await waiting(redis, keys) == {}  # no notification lane holds it
    where = await redis.hget(keys.index(), accepted["id"])
    assert isinstance(where, bytes)
    assert where.decode().startswith(keys.task_stream(3) + " ")


async def test_the_reconciler_rebuilds_a_lost_index_of_deferred_tasks(
    client: Client, auth: dict[str, str], start_task_worker: TaskWorkerFactory,
    redis: Redis, keys: QueueKeys, pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given a deferred job whose due-time index Redis lost (no worker running)
    first = start_task_worker()
    await _until_registered(first)
    await first.shutdown()
    accepted = await enqueue(client, auth, "example.add", args={"a": 7}, delay_s=1)
    await redis.delete(*keys.all_task_scheduled(), keys.scheduled_jobs())
    # When the reconciler's re-index pass runs
    reindexer = DueReindexer(ScheduledStore(pool), DueIndex(redis, keys))
    assert await reindexer.reindex(older_than_s=0.001) >= 1  # the database is shared
    # Then it is back in its task set, and a worker runs it once, not before its time
    assert await DueIndex(redis, keys).due_of(accepted["id"], 2, task=True) is not None
    start_task_worker()
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 7, "attempt": 1}
    assert await _started_at(pool, accepted["id"]) >= datetime.fromisoformat(accepted["send_at"])


async def test_the_python_client_defers_a_job(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")
    async with AsyncPulseClient(base, tenant.api_key) as pulse_client:
        delayed = await pulse_client.enqueue("example.add", a=1, b=1, _delay_s=0.5)
        at = datetime.now(UTC) + timedelta(seconds=0.5)
        typed = await tasks_example.add.enqueue(pulse_client, a=3, _send_at=at)
        assert delayed.accepted.status == "scheduled"
        assert typed.accepted.status == "scheduled"
        assert await delayed.result(timeout_s=20) == {"sum": 2, "attempt": 1}
        assert await typed.result(timeout_s=20) == {"sum": 3, "attempt": 1}
        # and one cancelled while scheduled ends cancelled
        later = await pulse_client.enqueue("example.add", a=1, _delay_s=60)
        assert (await later.cancel()).status == "cancelled"


async def test_batch_items_are_deferred_on_their_own(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    # Given a batch with a job now, one deferred, and one with a bad due time
    items = [
        {"task": "example.add", "args": {"a": 1}},
        {"task": "example.add", "args": {"a": 2}, "delay_s": 1},
        {"task": "example.add", "args": {"a": 3}, "delay_s": -5},
    ]
    response = await client.post("/api/jobs/batch", json={"items": items}, headers=auth)
    assert response.status == 202
    answer = await response.json()
    # Then each is answered on its own: queued, scheduled with its due time, refused
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    now, later, bad = answer["items"]
    assert now["job"]["status"] == "queued"
    assert later["job"]["status"] == "scheduled"
    assert bad["errors"][0]["pointer"] == "/2/delay_s"
    # and the deferred one runs once, not before its time, after the other
    first = await finished(client, auth, now["job"]["id"])
    second = await finished(client, auth, later["job"]["id"])
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert second["result"] == {"sum": 2, "attempt": 1}
    due = datetime.fromisoformat(later["job"]["send_at"])
    assert await _started_at(pool, later["job"]["id"]) >= due
    assert await _statuses(pool, later["job"]["id"]) == [
        "scheduled", "queued", "delivering", "delivered",
    ]  # fmt: skip


async def test_enqueue_many_defers_a_spec(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")
    async with AsyncPulseClient(base, tenant.api_key) as pulse_client:
        specs = [JobSpec("example.add", {"a": 5}, delay_s=0.5), JobSpec("example.add", {"a": 6})]
        deferred, now = await pulse_client.enqueue_many(specs)
        assert isinstance(deferred, Job)
        assert isinstance(now, Job)
        assert deferred.accepted.status == "scheduled"
        assert now.accepted.status == "queued"
        assert await deferred.result(timeout_s=20) == {"sum": 5, "attempt": 1}


async def test_scheduled_jobs_are_listed_by_status(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.add", args={"a": 1}, delay_s=60)
    response = await client.get("/api/jobs/?status=scheduled", headers=auth)
    assert response.status == 200
    listed = (await response.json())["items"]
    assert [item["id"] for item in listed] == [accepted["id"]]
    assert listed[0]["status"] == "scheduled"
