"""Many jobs in one call, chains (``after``) and groups, on real Redis and PostgreSQL: a child
starts only once every parent succeeded, a failed or cancelled parent cancels it with the
reason (audited, and its own children with it), a group's callback gets the results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.client import AsyncPulseClient, Job, JobFailed, JobSpec, PulseClient, Rejected
from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from pulse.store.tenants import NewTenant
from tests import tasks_example, tasks_flows_example
from tests.conftest import Client, RunningWorker

pytestmark = pytest.mark.integration


@pytest.fixture
async def task_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[RunningWorker]:
    """An in-process worker serving the example tasks and the flow tasks (no channel)."""
    chosen = msgspec.structs.replace(settings, reconcile_interval_s=3600.0)
    registries = [tasks_example.tasks, tasks_flows_example.tasks]
    stop = asyncio.Event()
    instance = build_worker(chosen, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    for _ in range(400):  # its tasks are published once its startup hooks ran
        names = await pool.fetch("SELECT name FROM task_registry WHERE name = 'flows.total'")
        if names:
            break
        await asyncio.sleep(0.02)
    yield running
    await running.shutdown()


async def post(
    client: Client, auth: dict[str, str], path: str, body: Any, status: int = 202
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=auth)
    document: dict[str, Any] = await response.json()
    assert response.status == status, document
    return document


async def enqueue(
    client: Client, auth: dict[str, str], task: str, after: list[str] | None = None, **args: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task, "args": args}
    if after is not None:
        body["after"] = after
    return await post(client, auth, "/api/jobs/", body)


async def finished(client: Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}?wait=20", headers=auth)
    document: dict[str, Any] = await response.json()
    assert response.status == 200
    return document


async def history(pool: asyncpg.Pool, job_id: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT status, detail FROM audit WHERE notification_id = $1 ORDER BY id", job_id
    )
    return [(row["status"], row["detail"]) for row in rows]


async def test_a_batch_commits_the_valid_items_and_names_the_bad_ones(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # Given a batch of two good jobs, one with a bad argument and one of an unknown task
    items = [
        {"task": "example.add", "args": {"a": 1, "b": 2}},
        {"task": "example.add", "args": {"a": "one"}},
        {"task": "example.nobody_has_this"},
        {"task": "example.add", "args": {"a": 10}, "priority": 0},
    ]
    answer = await post(client, auth, "/api/jobs/batch", {"items": items})
    # Then the good ones are accepted, each bad one is answered with its field
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [item["index"] for item in answer["items"]] == [0, 1, 2, 3]
    assert answer["items"][1]["errors"][0]["pointer"] == "/1/args/a"
    assert answer["items"][2]["errors"][0]["pointer"] == "/2/task"
    first, last = answer["items"][0]["job"], answer["items"][3]["job"]
    assert (first["status"], last["priority"]) == ("queued", 0)
    # And the accepted ones run
    assert (await finished(client, auth, first["id"]))["result"]["sum"] == 3
    assert (await finished(client, auth, last["id"]))["result"]["sum"] == 10


async def test_a_batch_with_no_valid_item_is_refused_whole(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    items = [{"task": "example.add", "args": {}}, {"task": "example.add", "wat": 1}]
    problem = await post(client, auth, "/api/jobs/batch", {"items": items}, status=422)
    assert [error["pointer"] for error in problem["errors"]] == ["/0/args/a", "/1/wat"]
    listed = await (await client.get("/api/jobs/", headers=auth)).json()
    assert listed["items"] == []


async def test_a_child_starts_after_its_parents_succeeded(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Given two parents that take a while, and a child after both
    order = tmp_path / "order"
    slow = await post(
        client, auth, "/api/jobs/", {"task": "example.sleeper", "args": {"seconds": 0.6}}
    )
    quick = await post(
        client,
        auth,
        "/api/jobs/",
        {"task": "flows.step", "args": {"path": str(order), "name": "quick"}},
    )
    child = await post(
        client, auth, "/api/jobs/",
        {"task": "flows.step", "args": {"path": str(order), "name": "child"},
         "after": [slow["id"], quick["id"]]},
    )  # fmt: skip
    # Then it waits, and runs once both succeeded, after them
    assert child["status"] == "waiting"
    job = await finished(client, auth, child["id"])
    assert job["status"] == "succeeded"
    parent = await finished(client, auth, slow["id"])
    assert job["started_at"] >= parent["finished_at"]
    assert order.read_text().split() == ["quick", "child"]
    assert ("queued", "released: every parent succeeded") in await history(pool, child["id"])


async def test_a_failed_parent_cancels_its_children_with_the_reason(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    # Given a parent that times out for good, a child after it and a grandchild after that
    parent = await post(
        client, auth, "/api/jobs/", {"task": "example.slow", "args": {"seconds": 5}}
    )
    child = await post(
        client,
        auth,
        "/api/jobs/",
        {"task": "example.add", "args": {"a": 1}, "after": [parent["id"]]},
    )
    grandchild = await post(
        client,
        auth,
        "/api/jobs/",
        {"task": "example.add", "args": {"a": 2}, "after": [child["id"]]},
    )
    # Then the parent fails, and both end cancelled, saying why, audited
    assert (await finished(client, auth, parent["id"]))["status"] == "failed"
    cancelled = await finished(client, auth, child["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["reason"] == f"parent {parent['id']} failed"
    assert cancelled["started_at"] is None
    last = await finished(client, auth, grandchild["id"])
    assert last["status"] == "cancelled"
    assert last["reason"] == f"parent {child['id']} was cancelled"
    assert ("cancelled", f"parent {parent['id']} failed") in await history(pool, child["id"])


async def test_cancelling_a_parent_cancels_its_child(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    parent = await post(
        client, auth, "/api/jobs/", {"task": "example.sleeper", "args": {"seconds": 30}}
    )
    child = await post(
        client,
        auth,
        "/api/jobs/",
        {"task": "example.add", "args": {"a": 1}, "after": [parent["id"]]},
    )
    await post(client, auth, f"/api/jobs/{parent['id']}/cancel", None, status=200)
    job = await finished(client, auth, child["id"])
    assert job["status"] == "cancelled"
    assert job["reason"] == f"parent {parent['id']} was cancelled"


async def test_a_waiting_child_can_be_cancelled_and_then_never_runs(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    parent = await post(
        client, auth, "/api/jobs/", {"task": "example.sleeper", "args": {"seconds": 0.3}}
    )
    child = await post(
        client,
        auth,
        "/api/jobs/",
        {"task": "example.add", "args": {"a": 1}, "after": [parent["id"]]},
    )
    cancelled = await post(client, auth, f"/api/jobs/{child['id']}/cancel", None, status=200)
    assert cancelled["status"] == "cancelled"
    assert (await finished(client, auth, parent["id"]))["status"] == "succeeded"
    job = await finished(client, auth, child["id"])
    assert (job["status"], job["started_at"]) == ("cancelled", None)


async def test_after_parents_that_already_ended(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    # Given a parent that succeeded and one that failed
    good = await enqueue(client, auth, "example.add", a=1)
    bad = await enqueue(client, auth, "example.slow", seconds=5)
    await finished(client, auth, good["id"])
    await finished(client, auth, bad["id"])
    # Then a child of the good one is queued at once and runs; one of the bad one never runs
    runs = await post(
        client, auth, "/api/jobs/", {"task": "example.add", "args": {"a": 2}, "after": [good["id"]]}
    )
    assert runs["status"] == "queued"
    assert (await finished(client, auth, runs["id"]))["result"]["sum"] == 2
    never = await post(
        client, auth, "/api/jobs/", {"task": "example.add", "args": {"a": 2}, "after": [bad["id"]]}
    )
    assert never["status"] == "cancelled"
    job = await finished(client, auth, never["id"])
    assert (job["status"], job["reason"]) == ("cancelled", f"parent {bad['id']} failed")


async def test_after_something_that_is_not_a_job_of_the_tenant_is_422(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    unknown = "0190d0c4-0000-7000-8000-000000000000"
    for after, detail in (([unknown], "no job"), (["nope"], "not a job id")):
        body = {"task": "example.add", "args": {"a": 1}, "after": after}
        problem = await post(client, auth, "/api/jobs/", body, status=422)
        assert detail in problem["detail"]
        assert "after" in str(problem)


async def test_a_group_callback_receives_its_members_results_in_order(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    body = {
        "jobs": [{"task": "example.add", "args": {"a": n}} for n in (1, 2, 3)],
        "then": {"task": "flows.total", "args": {"label": "total"}},
    }
    group = await post(client, auth, "/api/jobs/group", body)
    assert [job["status"] for job in group["jobs"]] == ["queued"] * 3
    assert group["then"]["status"] == "waiting"
    job = await finished(client, auth, group["then"]["id"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"total": 6, "parts": 3}
    assert [r["sum"] for r in job["args"]["results"]] == [1, 2, 3]


async def test_a_group_callback_is_checked_at_accept_time(
    client: Client, auth: dict[str, str], task_worker: RunningWorker
) -> None:
    body = {"jobs": [{"task": "example.add", "args": {"a": 1}}],
            "then": {"task": "flows.total", "args": {"nope": 1}}}  # fmt: skip
    problem = await post(client, auth, "/api/jobs/group", body, status=422)
    assert "then" in str(problem)
    assert "nope" in str(problem)
    body = {"jobs": [{"task": "example.add", "args": {"b": 1}}]}
    problem = await post(client, auth, "/api/jobs/group", body, status=422)
    assert "jobs[0]" in str(problem) or "/jobs/0" in str(problem)


async def test_the_python_client_enqueues_many_chains_and_groups(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")
    async with AsyncPulseClient(base, tenant.api_key) as pulse:
        many = await pulse.enqueue_many(
            [JobSpec("example.add", {"a": 1}), JobSpec("example.add", {"a": "x"})]
        )
        assert isinstance(many[0], Job)
        assert isinstance(many[1], Rejected)
        assert many[1].errors[0]["pointer"] == "/1/args/a"
        after = await pulse.enqueue("example.add", a=5, _after=[many[0]])
        assert after.accepted.status == "waiting"
        assert await after.result(timeout_s=20) == {"sum": 5, "attempt": 1}
        group = await pulse.group(
            [JobSpec("example.add", {"a": 2}), JobSpec("example.add", {"a": 3})],
            then=JobSpec("flows.total"),
        )
        assert group.then is not None
        assert await group.then.result(timeout_s=20) == {"sum": 5, "parts": 2}
        failing = await pulse.group(
            [JobSpec("example.slow", {"seconds": 5})], then=JobSpec("flows.total")
        )
        assert failing.then is not None
        with pytest.raises(JobFailed, match="cancelled"):
            await failing.then.result(timeout_s=20)


async def test_the_sync_client_enqueues_many(
    client: Client, tenant: NewTenant, task_worker: RunningWorker
) -> None:
    base = str(client.make_url("")).rstrip("/")

    def use() -> list[Any]:
        with PulseClient(base, tenant.api_key) as pulse:
            jobs = pulse.enqueue_many([JobSpec("example.add", {"a": n}) for n in range(3)])
            return [
                pulse.result(job.id, timeout_s=20)["sum"] for job in jobs if isinstance(job, Job)
            ]

    assert await asyncio.to_thread(use) == [0, 1, 2]


async def test_a_task_with_results_off_keeps_only_its_status_and_error(
    client: Client, auth: dict[str, str], task_worker: RunningWorker, pool: asyncpg.Pool
) -> None:
    ok = await finished(client, auth, (await enqueue(client, auth, "flows.quiet"))["id"])
    assert (ok["status"], ok["result"], ok["started_at"]) == ("succeeded", None, None)
    bad = await finished(
        client, auth, (await enqueue(client, auth, "flows.quiet", fail=True))["id"]
    )
    assert bad["status"] == "failed"
    assert "quietly failed" in bad["error"]["message"]
    rows = await pool.fetchval(
        "SELECT count(*) FROM job_results WHERE job_id = ANY($1::uuid[])", [ok["id"], bad["id"]]
    )
    assert rows == 0
