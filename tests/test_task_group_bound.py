"""A group callback's ``results`` are bounded (PULSE_MAX_GROUP_RESULTS_BYTES, sql/017): within
the bound it gets its members' results; over it, their job ids in order and
``ctx.results_omitted`` naming the bound; a group whose results could exceed the bound is
refused at accept (422 naming the field) unless its callback takes those ids. Real Redis and
PostgreSQL, an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from tests import tasks_example, tasks_flows_example
from tests.conftest import Client, RunningWorker
from tests.test_task_flows import finished, post

pytestmark = pytest.mark.integration

BOUND = 50  # bytes: two example.add results ({"sum":1,"attempt":1}, 21 bytes each) fit, not three


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The API's and the worker's: results of at most 1000 bytes, 50 for a group's."""
    return msgspec.structs.replace(
        settings, max_result_bytes=1000, max_group_results_bytes=BOUND,
        reconcile_interval_s=3600.0,
    )  # fmt: skip


@pytest.fixture
async def task_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[RunningWorker]:
    """An in-process worker serving the example and flow tasks, with the same settings."""
    registries = [tasks_example.tasks, tasks_flows_example.tasks]
    stop = asyncio.Event()
    instance = build_worker(settings, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    for _ in range(400):  # its tasks are published once its startup hooks ran
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE name = 'flows.collect'"):
            break
        await asyncio.sleep(0.02)
    yield running
    await running.shutdown()


def group(members: int, then: str) -> dict[str, Any]:
    return {
        "jobs": [{"task": "example.add", "args": {"a": 1}} for _ in range(members)],
        "then": {"task": then},
    }


async def test_a_callback_within_the_bound_gets_its_members_results(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await post(client, auth, "/api/jobs/group", group(2, "flows.collect"))
    job = await finished(client, auth, accepted["then"]["id"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"results": [{"sum": 1, "attempt": 1}] * 2, "omitted": None}


async def test_a_callback_over_the_bound_gets_its_members_ids_and_why(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    accepted = await post(client, auth, "/api/jobs/group", group(3, "flows.collect"))
    job = await finished(client, auth, accepted["then"]["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["results"] == [member["id"] for member in accepted["jobs"]]
    omitted = job["result"]["omitted"]
    assert "63 bytes" in omitted
    assert f"PULSE_MAX_GROUP_RESULTS_BYTES ({BOUND})" in omitted
    # each member's result is still there to read
    member = await finished(client, auth, accepted["jobs"][2]["id"])
    assert member["result"] == {"sum": 1, "attempt": 1}


async def test_a_group_that_could_exceed_the_bound_is_refused_unless_its_callback_takes_ids(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # flows.total takes list[dict]: the members' ids would not do
    problem = await post(client, auth, "/api/jobs/group", group(1, "flows.total"), status=422)
    assert "PULSE_MAX_GROUP_RESULTS_BYTES" in problem["detail"], problem
    assert "$.then.args.results" in str(problem) or "/then/args/results" in str(problem)
    waiting = await client.get("/api/jobs/?task=example.add", headers=auth)
    assert (await waiting.json())["items"] == []  # nothing of the refused group was committed


async def test_a_callback_that_cannot_take_a_missing_result_is_refused(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # flows.strict takes list[int]: a member keeping no result would give it null
    problem = await post(client, auth, "/api/jobs/group", group(1, "flows.strict"), status=422)
    assert "null" in problem["detail"], problem
    assert "$.then.args.results" in str(problem) or "/then/args/results" in str(problem)


async def test_a_deferred_member_or_callback_of_a_group_is_refused_not_ignored(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    deferred = group(2, "flows.collect")
    deferred["jobs"][1]["delay_s"] = 60
    problem = await post(client, auth, "/api/jobs/group", deferred, status=422)
    assert "/jobs/1/delay_s" in str(problem) or "$.jobs[1].delay_s" in str(problem), problem
    later = group(1, "flows.collect")
    later["then"]["send_at"] = "2099-01-01T00:00:00Z"
    problem = await post(client, auth, "/api/jobs/group", later, status=422)
    assert "send_at" in str(problem), problem
