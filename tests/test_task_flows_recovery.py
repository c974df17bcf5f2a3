"""A released task is streamed once, whoever hears of it, and even when nobody does: the
release is committed with the parent's end, the releasers append it once, and the reconciler
streams a release nobody streamed (the worker died between the commit and the append).

A database of its own: a reconciler adopts every unfinished job of its database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from tests import tasks_example, tasks_flows_example
from tests.conftest import Client, RunningWorker, ServerUrls, fresh_database
from tests.test_task_flows import enqueue, finished

pytestmark = pytest.mark.integration


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    async with fresh_database(server_urls.postgres, "pulse_task_flows_recovery") as url:
        yield url


@pytest.fixture
async def workers() -> AsyncIterator[list[RunningWorker]]:
    started: list[RunningWorker] = []
    yield started
    for running in started:
        if not running.task.done():
            await running.shutdown()


def start(
    workers: list[RunningWorker], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    **overrides: Any,
) -> RunningWorker:  # fmt: skip
    chosen = msgspec.structs.replace(settings, **overrides)
    registries = [tasks_example.tasks, tasks_flows_example.tasks]
    stop = asyncio.Event()
    instance = build_worker(chosen, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    workers.append(running)
    return running


async def registered(pool: asyncpg.Pool) -> None:
    for _ in range(300):
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE name = 'flows.step'"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("flows.step was never published")


async def releases(pool: asyncpg.Pool, job_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM audit WHERE notification_id = $1 AND detail LIKE 'released:%'",
        job_id,
    )
    return count


async def test_a_release_heard_by_two_workers_runs_the_child_once(
    client: Client, auth: dict[str, str], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    workers: list[RunningWorker], tmp_path: Path,
) -> None:  # fmt: skip
    # Given chains enqueued while no worker runs (a parent that ended before its child was
    # enqueued would have the child queued at accept, never released)
    publisher = start(workers, settings, redis, pool, reconcile_interval_s=3600.0)
    await registered(pool)
    await publisher.shutdown()
    order = tmp_path / "order"
    children = []
    for n in range(5):
        parent = await enqueue(client, auth, "flows.step", path=str(order), name=f"parent{n}")
        child = await enqueue(
            client, auth, "flows.step", after=[parent["id"]], path=str(order), name=f"child{n}"
        )
        children.append(child["id"])
    # When they run through two workers, both listening for releases
    for _ in range(2):
        start(workers, settings, redis, pool, reconcile_interval_s=3600.0)
    # Then every child ran once, after its parent
    for child_id in children:
        assert (await finished(client, auth, child_id))["status"] == "succeeded"
        assert await releases(pool, child_id) == 1
    lines = order.read_text().split()
    for n in range(5):
        assert lines.count(f"child{n}") == 1
        assert lines.index(f"parent{n}") < lines.index(f"child{n}")
    await asyncio.sleep(0.3)  # a second append, had there been one, would have run by now
    assert order.read_text().split().count("child0") == 1


async def test_a_release_nobody_streamed_is_streamed_by_the_reconciler(
    client: Client, auth: dict[str, str], settings: Settings, redis: Redis, pool: asyncpg.Pool,
    workers: list[RunningWorker], tmp_path: Path,
) -> None:  # fmt: skip
    # Given a chain accepted while no worker runs
    first = start(workers, settings, redis, pool)
    await registered(pool)
    await first.shutdown()
    order = tmp_path / "order"
    parent = await enqueue(client, auth, "flows.step", path=str(order), name="parent")
    child = await enqueue(
        client, auth, "flows.step", after=[parent["id"]], path=str(order), name="child"
    )
    assert child["status"] == "waiting"
    # When the parent's end is committed and its worker dies before streaming the release
    # (nobody listens: the end is recorded as the acker records it, by the row's status)
    await pool.execute(
        "UPDATE notifications SET status = 'delivered', updated_at = now() WHERE id = $1",
        parent["id"],
    )
    assert await releases(pool, child["id"]) == 1
    # Then a worker's reconciler streams the child, which runs once
    start(workers, settings, redis, pool, reconcile_interval_s=0.2, reconcile_after_s=0.1)
    job = await finished(client, auth, child["id"])
    assert job["status"] == "succeeded"
    assert order.read_text().split() == ["child"]  # the parent's entry finds it ended
