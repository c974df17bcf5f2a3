"""Regression tests for the reviewer's findings on user tasks (secrets in errors, hung threads,
result sizes, cancel races, odd answers), on real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
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
