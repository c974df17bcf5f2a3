"""Tasks on the notifications' guarantees: a worker hands back a task it does not have without
using an attempt, and the reconciler streams again a committed task that Redis lost.

These tests get a database of their own: a reconciler adopts every unfinished job in its
database, including other tests' leftovers in the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

import pulse
from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.runtime.worker import build_worker
from tests import tasks_example
from tests.conftest import Client, RunningWorker, ServerUrls, fresh_database
from tests.test_tasks import enqueue, finished

pytestmark = pytest.mark.integration


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    async with fresh_database(server_urls.postgres, "pulse_tasks_recovery") as url:
        yield url


@pytest.fixture
async def workers(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[list[RunningWorker]]:
    started: list[RunningWorker] = []
    yield started
    for running in started:
        if not running.task.done():
            await running.shutdown()


def start(
    workers: list[RunningWorker], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    registry: pulse.Tasks, **overrides: Any,
) -> RunningWorker:  # fmt: skip
    chosen = msgspec.structs.replace(settings, **overrides)
    stop = asyncio.Event()
    instance = build_worker(chosen, redis, pool, {}, Metrics(), [registry], serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    workers.append(running)
    return running


async def registered(pool: asyncpg.Pool, name: str) -> None:
    for _ in range(300):
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE name = $1", name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was never published")


async def audit_until(pool: asyncpg.Pool, job_id: str, text: str) -> list[str]:
    details: list[str] = []
    for _ in range(400):
        rows = await pool.fetch(
            "SELECT status || ': ' || coalesce(detail, '') FROM audit"
            " WHERE notification_id = $1 ORDER BY id",
            job_id,
        )
        details = [row[0] for row in rows]
        if any(text in detail for detail in details):
            return details
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id}: no audit row with {text!r}: {details}")


async def test_a_worker_without_the_task_hands_it_back_without_using_an_attempt(
    client: Client, auth: dict[str, str], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    workers: list[RunningWorker],
) -> None:  # fmt: skip
    # Given example.add published by a worker that has stopped since
    first = start(workers, settings, redis, pool, tasks_example.tasks)
    await registered(pool, "example.add")
    await first.shutdown()
    # and a worker serving only another task
    other = pulse.Tasks()

    @other.task(name="elsewhere.noop")
    async def noop() -> None: ...

    start(workers, settings, redis, pool, other, worker_reclaim_interval_ms=50)
    # When example.add is enqueued
    accepted = await enqueue(client, auth, "example.add", args={"a": 4})
    # Then that worker gives it back, unrun
    details = await audit_until(pool, accepted["id"], "not served by this worker")
    assert any(detail.startswith("retrying") for detail in details)
    # And a worker that has it runs it as its first attempt
    start(workers, settings, redis, pool, tasks_example.tasks, worker_reclaim_interval_ms=50)
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 4, "attempt": 1}
    assert job["attempts"] == 1


async def test_a_committed_task_that_redis_lost_is_streamed_again(
    client: Client, auth: dict[str, str], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    workers: list[RunningWorker],
) -> None:  # fmt: skip
    # Given an accepted task whose stream entry Redis lost (no worker running)
    first = start(workers, settings, redis, pool, tasks_example.tasks)
    await registered(pool, "example.add")
    await first.shutdown()
    accepted = await enqueue(client, auth, "example.add", args={"a": 5}, priority=1)
    keys = QueueKeys(settings.key_prefix)
    assert await redis.xlen(keys.task_stream(1)) == 1
    await redis.delete(keys.task_stream(1), keys.index())
    # When a worker's reconciler runs
    start(
        workers, settings, redis, pool, tasks_example.tasks,
        reconcile_interval_s=0.2, reconcile_after_s=0.1,
    )  # fmt: skip
    # Then the task is streamed again (to the task stream) and runs, and the audit says so
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 5, "attempt": 1}
    await audit_until(pool, accepted["id"], "re-enqueued: missing from Redis")
