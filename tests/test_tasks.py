"""User tasks end to end on real Redis and PostgreSQL: enqueue over HTTP, a worker that serves
``tests.tasks_example``, results, progress, retries, timeouts, cancellation, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.client import AsyncPulseClient, JobFailed, PulseClient
from pulse.config import Settings
from pulse.core.models import task_channel
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from pulse.store.tenants import NewTenant, TenantStore
from tests import tasks_example
from tests.conftest import Client, RunningWorker

pytestmark = pytest.mark.integration

TaskWorkerFactory = Callable[..., RunningWorker]


@pytest.fixture
async def start_task_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[TaskWorkerFactory]:
    """In-process workers serving the example tasks (and no channel)."""
    started: list[RunningWorker] = []

    def start(**overrides: Any) -> RunningWorker:
        chosen = msgspec.structs.replace(settings, **overrides)
        stop = asyncio.Event()
        instance = build_worker(
            chosen, redis, pool, {}, Metrics(), [tasks_example.tasks], serve_channels=False
        )
        running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.shutdown()


@pytest.fixture
async def task_worker(start_task_worker: TaskWorkerFactory) -> RunningWorker:
    running = start_task_worker()
    await _until_registered(running)
    return running


async def _until_registered(running: RunningWorker) -> None:
    """The worker has published its tasks once its startup hooks ran."""
    host = running.worker.tasks
    assert host is not None
    for _ in range(200):
        if "greeting" in host.resources:
            await asyncio.sleep(0.05)  # the publish follows the hooks
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the task worker never started")


async def enqueue(
    client: Client, auth: dict[str, str], task: str, key: str | None = None, **body: Any
) -> dict[str, Any]:
    headers = auth | ({"Idempotency-Key": key} if key else {})
    response = await client.post("/api/jobs/", json={"task": task, **body}, headers=headers)
    document: dict[str, Any] = await response.json()
    assert response.status == 202, document
    assert response.headers["Location"] == f"/api/jobs/{document['id']}"
    return document


async def finished(client: Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    """Wait for the job's end with the long poll (no polling loop)."""
    response = await client.get(f"/api/jobs/{job_id}?wait=20", headers=auth)
    document: dict[str, Any] = await response.json()
    assert response.status == 200
    return document


async def until(client: Client, auth: dict[str, str], job_id: str, check: Any) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for _ in range(400):
        document = await (await client.get(f"/api/jobs/{job_id}", headers=auth)).json()
        if check(document):
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} never got there: {document}")


async def test_a_task_runs_and_its_result_is_kept(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # Given a worker serving the example tasks, When a job is enqueued over HTTP
    accepted = await enqueue(client, auth, "example.add", args={"a": 2, "b": 3})
    assert accepted["status"] == "queued"
    assert accepted["task"] == "example.add"
    # Then it succeeds with the function's result, its progress complete
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 5, "attempt": 1}
    assert job["attempts"] == 1
    assert job["progress"] == 1
    assert job["error"] is None
    assert job["started_at"] is not None
    assert job["finished_at"] is not None


async def test_a_plain_function_runs_in_a_thread_with_resources_and_its_key(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.greet", key="greet-1", args={"name": "Ada"})
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == "Hello, Ada (greet-1)"


async def test_the_same_idempotency_key_answers_the_first_job_again(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    first = await enqueue(client, auth, "example.add", key="same", args={"a": 1})
    again = await enqueue(client, auth, "example.add", key="same", args={"a": 1})
    assert again["id"] == first["id"]
    listed = await (await client.get("/api/jobs/?task=example.add", headers=auth)).json()
    assert [item["id"] for item in listed["items"]].count(first["id"]) == 1


async def test_arguments_are_checked_at_accept_time(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    cases = [
        ({"task": "example.add", "args": {"a": "two"}}, "/args/a"),
        ({"task": "example.add", "args": {}}, "/args/a"),
        ({"task": "example.add", "args": {"a": 1, "c": 2}}, "/args/c"),
        ({"task": "example.nobody_has_this", "args": {}}, "/task"),
    ]
    for body, pointer in cases:
        response = await client.post("/api/jobs/", json=body, headers=auth)
        problem = await response.json()
        assert response.status == 422, problem
        assert response.content_type == "application/problem+json"
        assert pointer in str(problem), problem


async def test_progress_is_visible_while_the_task_runs(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.sleeper", args={"seconds": 1.0})
    running = await until(client, auth, accepted["id"], lambda d: d["progress"] == 0.1)
    assert running["status"] == "running"
    assert running["note"] == "sleeping"
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["progress"] == 1


async def test_retry_raised_inside_runs_the_task_again(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.flaky", args={"succeed_on": 3})
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == 3
    assert job["attempts"] == 3


async def test_an_exception_named_in_retry_on_is_retried(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.flaky_io")
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == 2


async def test_a_task_over_its_timeout_is_cancelled_and_retried_then_dead(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # Given example.slow (timeout 0.3 s, 2 attempts) asked to sleep 5 s
    accepted = await enqueue(client, auth, "example.slow", args={"seconds": 5})
    # Then both attempts time out and the job fails with the timeout as its error
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert job["error"]["type"] == "TimeoutError"
    assert "timed out after 0.3 s" in job["error"]["message"]


async def test_a_failed_task_is_dead_lettered_and_replayed(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, tmp_path: Path
) -> None:
    # Given a task that fails for good (its input file is missing)
    path = tmp_path / "input.txt"
    accepted = await enqueue(client, auth, "example.fragile", args={"path": str(path)})
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert job["error"]["type"] == "FileNotFoundError"
    assert "FileNotFoundError" in job["error"]["traceback"]
    # Then it is in the dead letters
    letters = await (await client.get("/api/dead-letters", headers=auth)).json()
    letter = next(i for i in letters["items"] if i["notification_id"] == accepted["id"])
    assert letter["channel"] == "task:example.fragile"
    # When the input exists and the dead letter is replayed
    path.write_text("contents")
    replayed = await client.post(f"/api/dead-letters/{letter['id']}/replay", headers=auth)
    assert replayed.status == 202
    # Then the job runs again, afresh, and succeeds
    job = await until(client, auth, accepted["id"], lambda d: d["status"] == "succeeded")
    assert job["result"] == "contents"
    assert job["error"] is None


async def test_a_queued_job_cancelled_never_starts(
    client: Client, auth: dict[str, str], start_task_worker: TaskWorkerFactory
) -> None:
    # Given the task registered by a worker that has stopped since (nobody runs jobs now)
    first = start_task_worker()
    await _until_registered(first)
    await first.shutdown()
    queued = await enqueue(client, auth, "example.add", args={"a": 1})
    # When it is cancelled while queued
    response = await client.post(f"/api/jobs/{queued['id']}/cancel", headers=auth)
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    # Then a worker that starts afterwards never runs it
    start_task_worker()
    later = await enqueue(client, auth, "example.add", args={"a": 2})
    assert (await finished(client, auth, later["id"]))["status"] == "succeeded"
    job = await finished(client, auth, queued["id"])
    assert job["status"] == "cancelled"
    assert job["started_at"] is None
    assert job["attempts"] == 0


async def test_a_running_job_cancelled_sees_cancelled_error_and_ends_cancelled(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.sleeper", args={"seconds": 60})
    running = await until(client, auth, accepted["id"], lambda d: d["status"] == "running")
    assert running["started_at"] is not None  # when it was claimed, before any progress
    assert running["started_at"] >= accepted["created_at"]
    response = await client.post(f"/api/jobs/{accepted['id']}/cancel", headers=auth)
    assert response.status == 200
    job = await until(client, auth, accepted["id"], lambda d: d["finished_at"] is not None)
    assert job["status"] == "cancelled"
    assert job["error"]["type"] == "CancelledError"
    # and the worker holds nothing any more (its entry acknowledged, lease let go)
    await until(client, auth, accepted["id"], lambda d: task_worker.worker.leaser.held == 0)


async def test_a_cancel_heard_twice_ends_the_run_once_and_the_worker_serves_on(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    accepted = await enqueue(client, auth, "example.sleeper", args={"seconds": 60})
    await until(client, auth, accepted["id"], lambda d: d["status"] == "running")
    host = task_worker.worker.tasks
    assert host is not None
    # When its cancel is committed (as the API commits it, announcing nothing) and its worker
    # hears of it twice before the run sees it (two announcements)
    await pool.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = 'cancelled by a test'"
        " WHERE id = $1",
        accepted["id"],
    )
    lane = host.lanes[task_channel("example.sleeper")]
    assert [lane.cancel(accepted["id"]), lane.cancel(accepted["id"])] == [True, True]
    # Then the run ends cancelled, recorded, its entry settled, and the task runs on
    job = await until(client, auth, accepted["id"], lambda d: d["finished_at"] is not None)
    assert (job["status"], job["error"]["type"]) == ("cancelled", "CancelledError")
    await until(client, auth, accepted["id"], lambda d: task_worker.worker.leaser.held == 0)
    again = await enqueue(client, auth, "example.sleeper", args={"seconds": 0})
    assert (await finished(client, auth, again["id"]))["status"] == "succeeded"


async def test_a_finished_job_cannot_be_cancelled(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.add", args={"a": 1})
    await finished(client, auth, accepted["id"])
    response = await client.post(f"/api/jobs/{accepted['id']}/cancel", headers=auth)
    assert response.status == 409


async def test_another_tenant_cannot_see_a_job(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    other = await TenantStore(pool).create("other-tenant-of-tasks-" + auth["Authorization"][-6:])
    accepted = await enqueue(client, auth, "example.add", args={"a": 1})
    response = await client.get(
        f"/api/jobs/{accepted['id']}", headers={"Authorization": f"Bearer {other.api_key}"}
    )
    assert response.status == 404


async def test_the_python_client_enqueues_and_waits_for_the_result(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")
    async with AsyncPulseClient(base, tenant.api_key) as pulse_client:
        # by name, and typed from the function itself
        job = await pulse_client.enqueue("example.add", a=20, b=22)
        typed = await tasks_example.add.enqueue(pulse_client, a=1)
        assert await job.result(timeout_s=20) == {"sum": 42, "attempt": 1}
        assert await typed.result(timeout_s=20) == {"sum": 1, "attempt": 1}
        assert (await job.get()).status == "succeeded"
        # a job that fails raises JobFailed with its document
        failing = await pulse_client.enqueue("example.fragile", path="/nonexistent/file")
        with pytest.raises(JobFailed) as failed:
            await failing.result(timeout_s=20)
        assert failed.value.job.error is not None
        assert failed.value.job.error.type == "FileNotFoundError"
        # waiting gives up after timeout_s without the job ending
        sleeping = await pulse_client.enqueue("example.sleeper", seconds=30)
        with pytest.raises(TimeoutError):
            await sleeping.result(timeout_s=0.5)
        assert (await sleeping.cancel()).status == "cancelled"


async def test_the_blocking_client_enqueues_and_waits_for_the_result(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")

    def blocking() -> object:
        with PulseClient(base, tenant.api_key) as pulse_client:
            accepted = pulse_client.enqueue("example.greet", name="Grace")
            return pulse_client.result(accepted.id, timeout_s=20)

    result = await asyncio.to_thread(blocking)
    assert isinstance(result, str)
    assert result.startswith("Hello, Grace")


async def test_results_are_swept_after_their_retention(
    client: Client, auth: dict[str, str], start_task_worker: TaskWorkerFactory
) -> None:
    # Given a worker sweeping often, and a task that keeps its result 0.2 s
    await _until_registered(start_task_worker(result_sweep_interval_s=0.1))
    accepted = await enqueue(client, auth, "example.ephemeral")
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    # Then the result is removed, the job itself stays
    swept = await until(client, auth, accepted["id"], lambda d: d["finished_at"] is None)
    assert swept["status"] == "succeeded"
    assert swept["result"] is None


async def test_task_jobs_stay_out_of_the_notification_list(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "example.add", args={"a": 1})
    listed = await (await client.get("/api/notifications/", headers=auth)).json()
    assert accepted["id"] not in [item["id"] for item in listed["items"]]
    jobs = await (await client.get("/api/jobs/", headers=auth)).json()
    assert accepted["id"] in [item["id"] for item in jobs["items"]]
