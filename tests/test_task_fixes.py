"""Regression tests for the reviewer's findings on user tasks (secrets in errors, hung threads,
result sizes, cancel races, odd answers), on real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.models import Status
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from pulse.store.ledger import DeliveryLedger, OutcomeRow, RunRow
from pulse.store.tenants import TenantStore
from tests import tasks_fixes_example
from tests.conftest import Client, RunningWorker
from tests.test_tasks import enqueue, finished

pytestmark = pytest.mark.integration

Start = Callable[..., RunningWorker]


@pytest.fixture
async def start_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[Start]:
    started: list[RunningWorker] = []

    def start(**overrides: Any) -> RunningWorker:
        chosen = msgspec.structs.replace(settings, **overrides)
        stop = asyncio.Event()
        instance = build_worker(
            chosen, redis, pool, {}, Metrics(), [tasks_fixes_example.tasks], serve_channels=False
        )
        running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
        started.append(running)
        return running

    tasks_fixes_example.release.clear()
    yield start
    tasks_fixes_example.release.set()
    for running in started:
        if not running.task.done():
            await running.shutdown()


@pytest.fixture
async def worker(start_worker: Start) -> RunningWorker:
    running = start_worker()
    for _ in range(200):  # published once started
        if running.worker.tasks is not None and running.worker.tasks.lanes:
            await asyncio.sleep(0.1)
            return running
        await asyncio.sleep(0.02)
    raise AssertionError("the task worker never started")


async def test_a_configured_secret_raised_by_a_task_is_redacted_and_pulse_frames_trimmed(
    client: Client, auth: dict[str, str], worker: RunningWorker, settings: Settings
) -> None:
    secret = settings.receipt_signing_key
    assert secret
    accepted = await enqueue(client, auth, "fixes.leak", args={"secret": secret})
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    error = job["error"]
    assert secret not in error["message"]
    assert error["message"] == "signing key is ***"
    assert secret not in error["traceback"]
    # the task's own frame stays; Pulse's own files and its layout do not show
    assert "tasks_fixes_example.py" in error["traceback"]
    assert "pulse/runtime" not in error["traceback"]
    assert "site-packages" not in error["traceback"]
    assert "/work/" not in error["traceback"]


async def test_an_integer_over_64_bits_in_args_is_named_at_its_own_pointer(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    response = await client.post(
        "/api/jobs/", json={"task": "fixes.big", "args": {"size": 2**70}}, headers=auth
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert "/args/size" in str(problem)
    assert "/payload" not in str(problem)


async def test_a_bad_job_id_is_answered_as_no_job(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    for path in ("/api/jobs/abc", "/api/jobs/abc/cancel"):
        call = client.get if path.endswith("abc") else client.post
        response = await call(path, headers=auth)
        assert response.status == 404
        text = await response.text()
        assert "no job abc" in text
        assert "notification" not in text


async def test_a_nan_result_fails_the_run_as_not_json(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "fixes.nan")
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    assert job["result"] is None
    assert "JSON" in job["error"]["message"]


async def test_unstorable_text_in_a_result_error_or_note_ends_that_job_and_recording_goes_on(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    # Given runs whose result, error or progress note holds U+0000 (PostgreSQL refuses it)
    result = await enqueue(client, auth, "fixes.nul_result")
    error = await enqueue(client, auth, "fixes.nul_error")
    note = await enqueue(client, auth, "fixes.nul_note")
    surrogate = await enqueue(client, auth, "fixes.surrogate_error")
    unsayable = await enqueue(client, auth, "fixes.unsayable")
    after = [await enqueue(client, auth, "fixes.quick") for _ in range(5)]
    # Then the result is refused as not storable, the error and note are kept with U+FFFD
    refused = await finished(client, auth, result["id"])
    assert refused["status"] == "failed"
    assert refused["error"]["type"] == "ResultNotSerializable"
    assert "NUL" in refused["error"]["message"]
    failed = await finished(client, auth, error["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "bad\ufffderr"
    noted = await finished(client, auth, note["id"])
    assert (noted["status"], noted["result"]) == ("succeeded", "noted")
    assert noted["note"] == "half\ufffdway"
    odd = await finished(client, auth, surrogate["id"])
    assert (odd["status"], odd["error"]["message"]) == ("failed", "sur\ufffdrogate")
    mute = await finished(client, auth, unsayable["id"])
    assert (mute["status"], mute["error"]["type"]) == ("failed", "Unsayable")
    assert "str() failed" in mute["error"]["message"]
    # and the worker records everything else as before
    for job in after:
        assert (await finished(client, auth, job["id"]))["status"] == "succeeded"


async def test_a_task_job_is_not_readable_as_a_notification(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    accepted = await enqueue(client, auth, "fixes.quick", key="secret-idempotency-key-1")
    await finished(client, auth, accepted["id"])
    response = await client.get(f"/api/notifications/{accepted['id']}", headers=auth)
    assert response.status == 404
    assert "secret-idempotency-key-1" not in await response.text()
    listed = await client.get("/api/notifications/?channel=task:fixes.quick", headers=auth)
    assert (await listed.json())["items"] == []


async def test_a_task_job_is_neither_cancelled_nor_moved_as_a_notification(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    await worker.shutdown()  # the job stays queued
    accepted = await enqueue(client, auth, "fixes.quick")
    path = f"/api/notifications/{accepted['id']}"
    cancel = await client.post(f"{path}/cancel", headers=auth)
    patch = await client.patch(path, json={"delay_s": 60}, headers=auth)
    job = await (await client.get(f"/api/jobs/{accepted['id']}", headers=auth)).json()

    assert (cancel.status, patch.status) == (404, 404)
    assert job["status"] == "queued"


async def _a_running_job(
    client: Client, auth: dict[str, str], worker: RunningWorker, pool: asyncpg.Pool
) -> str:
    """A job whose row says running, its worker stopped (so the moment lasts)."""
    await worker.shutdown()
    accepted = await enqueue(client, auth, "fixes.quick")
    job_id: str = accepted["id"]
    await pool.execute("UPDATE notifications SET status = 'delivering' WHERE id = $1", job_id)
    return job_id


async def _record_its_end(pool: asyncpg.Pool, job_id: str) -> None:
    """What the worker's acker writes when the run ends: status and result in one statement."""
    run = RunRow(1, datetime.now(UTC), b'"quick"', None, None, None, 60)
    outcome = OutcomeRow(job_id, Status.DELIVERED, None, None, False, "s", "1-0", run=run)
    await DeliveryLedger(pool).record([outcome], [], "w", 1)


async def test_cancelling_a_job_whose_run_has_ended_is_a_conflict(
    client: Client, auth: dict[str, str], worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    job_id = await _a_running_job(client, auth, worker, pool)
    await _record_its_end(pool, job_id)
    response = await client.post(f"/api/jobs/{job_id}/cancel", headers=auth)
    assert response.status == 409
    job = await (await client.get(f"/api/jobs/{job_id}", headers=auth)).json()
    assert job["status"] == "succeeded"
    assert job["result"] == "quick"


async def test_a_result_recorded_after_a_cancel_is_not_written_and_does_not_show(
    client: Client, auth: dict[str, str], worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    job_id = await _a_running_job(client, auth, worker, pool)
    response = await client.post(f"/api/jobs/{job_id}/cancel", headers=auth)
    assert response.status == 200
    await _record_its_end(pool, job_id)  # the run's late end
    job = await (await client.get(f"/api/jobs/{job_id}", headers=auth)).json()
    assert job["status"] == "cancelled"
    assert job["result"] is None
    kept = await pool.fetchval("SELECT count(*) FROM job_results WHERE job_id = $1", job_id)
    assert kept == 0


async def test_a_result_over_the_cap_fails_the_run_unretried_and_the_list_omits_results(
    client: Client, auth: dict[str, str], start_worker: Start
) -> None:
    start_worker(max_result_bytes=1000)
    over = await enqueue(client, auth, "fixes.big", args={"size": 2000})
    failed = await finished(client, auth, over["id"])
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1  # max_attempts 3: too big is not retried
    assert failed["error"]["type"] == "ResultTooLarge"
    assert "PULSE_MAX_RESULT_BYTES" in failed["error"]["message"]
    under = await enqueue(client, auth, "fixes.big", args={"size": 500})
    kept = await finished(client, auth, under["id"])
    assert kept["result"] == "x" * 500
    listed = await (await client.get("/api/jobs/?limit=10", headers=auth)).json()
    item = next(i for i in listed["items"] if i["id"] == under["id"])
    assert item["status"] == "succeeded"
    assert item["result"] is None  # read it with GET /api/jobs/{id}


async def test_a_progress_note_over_the_cap_fails_the_run(
    client: Client, auth: dict[str, str], start_worker: Start
) -> None:
    start_worker(max_result_bytes=1000)
    accepted = await enqueue(client, auth, "fixes.noisy", args={"size": 2000})
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    assert "PULSE_MAX_RESULT_BYTES" in job["error"]["message"]
    assert job["note"] is None


async def test_hung_plain_functions_of_one_task_leave_other_tasks_threads(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    # Given a plain-def task hung in more threads than asyncio's default executor holds
    tasks_fixes_example.release.clear()
    tasks_fixes_example.hung = hung = threading.Semaphore(0)
    default_threads = min(32, (os.cpu_count() or 1) + 4)
    for _ in range(32):
        await enqueue(client, auth, "fixes.hang")
    tasks_fixes_example.unhung.clear()
    started = 0
    while started < default_threads:  # no thread of ours: the default executor may be full
        if hung.acquire(blocking=False):
            started += 1
        else:
            await asyncio.sleep(0.01)
    # When another task's plain def runs, Then it gets a thread of its own and finishes
    accepted = await enqueue(client, auth, "fixes.quick")
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == "quick"
    assert tasks_fixes_example.unhung == []  # while the hung threads still hang


async def test_one_tenants_backlog_does_not_hold_back_another_tenants_job(
    client: Client, auth: dict[str, str], worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    # Given tenant B's backlog of 40 jobs on a task that runs one at a time
    other = await TenantStore(pool).create(f"fairness-{secrets.token_hex(4)}")
    b_auth = {"Authorization": f"Bearer {other.api_key}"}
    starts = tasks_fixes_example.starts
    starts.clear()
    for _ in range(40):
        await enqueue(client, b_auth, "fixes.turn")
    # When tenant A enqueues one job at the same priority
    before = len(starts)
    accepted = await enqueue(client, auth, "fixes.turn")
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    # Then it starts among the first few runs after it, before B's backlog drains
    a_tenant = job["result"]
    position = starts.index(a_tenant) - before
    assert position <= 5, f"A's job started {position} runs after it was enqueued"
    assert starts.count(other.tenant_id) < 40


async def test_args_in_a_batch_are_capped_like_results_and_named_at_their_pointer(
    client: Client, auth: dict[str, str], worker: RunningWorker
) -> None:
    # a batch body may hold 4 MiB: one item's args still stay within PULSE_MAX_RESULT_BYTES
    huge = {"task": "fixes.leak", "args": {"secret": "s" * (1536 * 1024)}}
    wide = {"task": "fixes.big", "args": {"size": 2**70}}
    body = io.BytesIO(msgspec.json.encode({"items": [huge, wide]}))
    headers = auth | {"Content-Type": "application/json"}
    response = await client.post("/api/jobs/batch", data=body, headers=headers)
    problem = await response.json()
    assert response.status == 422, problem
    text = str(problem)
    assert "PULSE_MAX_RESULT_BYTES" in text
    assert "/args/size" in text
    assert "/payload" not in text
