"""``cpu_bound`` tasks in worker processes (timeout and cancellation kill the process, a fresh
one takes its place) and ``fleet_concurrency`` through Redis slots held under a lease."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

import pulse
from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.task_slots import TaskSlots
from pulse.runtime.worker import build_worker
from tests import tasks_cpu_example
from tests.conftest import Client, RunningWorker
from tests.test_task_flows import enqueue, finished, post

pytestmark = pytest.mark.integration


@pytest.fixture
async def workers(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> AsyncIterator[list[RunningWorker]]:
    started: list[RunningWorker] = []

    def start() -> None:
        chosen = msgspec.structs.replace(settings, task_processes=2)
        registries = [tasks_cpu_example.tasks]
        stop = asyncio.Event()
        instance = build_worker(
            chosen, redis, pool, {}, Metrics(), registries, serve_channels=False
        )
        started.append(RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop))

    start()
    start()
    for _ in range(1500):  # both have started their processes
        hosts = [running.worker.tasks for running in started]
        if all(h is not None and h.processes is not None and h.processes.idle for h in hosts):
            break
        await asyncio.sleep(0.02)
    for _ in range(400):
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE name = 'fleet.hold'"):
            break
        await asyncio.sleep(0.02)
    yield started
    for running in started:
        await running.shutdown()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _read(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def lines(path: Path, count: int) -> list[str]:
    for _ in range(600):
        if len(found := _read(path)) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never had {count} lines")


async def test_a_cpu_bound_task_runs_in_another_process(
    client: Client, auth: dict[str, str], workers: list[RunningWorker]
) -> None:
    accepted = await enqueue(client, auth, "cpu.square", n=12)
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "succeeded"
    assert job["result"]["square"] == 144
    assert job["result"]["pid"] != os.getpid()


async def test_a_timed_out_cpu_bound_run_has_its_process_killed_and_replaced(
    client: Client, auth: dict[str, str], workers: list[RunningWorker], tmp_path: Path
) -> None:
    marker = tmp_path / "pids"
    accepted = await enqueue(client, auth, "cpu.spin", marker=str(marker))
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert "timed out after 0.5 s" in job["error"]["message"]
    pids = [int(pid) for pid in marker.read_text().split()]
    assert len(set(pids)) == 2  # the second attempt ran in a fresh process
    assert not any(alive(pid) for pid in pids)
    # and the pool still serves
    again = await enqueue(client, auth, "cpu.square", n=3)
    assert (await finished(client, auth, again["id"]))["result"]["square"] == 9


async def test_cancelling_a_running_cpu_bound_task_kills_its_process(
    client: Client, auth: dict[str, str], workers: list[RunningWorker], tmp_path: Path
) -> None:
    marker = tmp_path / "pids"
    accepted = await enqueue(client, auth, "cpu.spin", marker=str(marker))
    (pid,) = await lines(marker, 1)
    await post(client, auth, f"/api/jobs/{accepted['id']}/cancel", None, status=200)
    job = await finished(client, auth, accepted["id"])
    assert job["status"] == "cancelled"
    for _ in range(200):
        if not alive(int(pid)):
            break
        await asyncio.sleep(0.02)
    assert not alive(int(pid))


async def test_runs_waiting_for_a_free_process_do_not_spend_their_timeout(
    client: Client, auth: dict[str, str], workers: list[RunningWorker]
) -> None:
    # Given four processes in all (two workers, two each) and twenty runs of 0.3 s, each
    # allowed 1.5 s: the last ones wait longer than that for a process
    ids = [(await enqueue(client, auth, "cpu.busy", seconds=0.3))["id"] for _ in range(20)]
    # Then every run succeeds at its first attempt: its timeout counts from its start
    jobs = [await finished(client, auth, job_id) for job_id in ids]
    assert {(job["status"], job["attempts"]) for job in jobs} == {("succeeded", 1)}
    assert len({job["result"] for job in jobs}) <= 4


async def test_retry_and_errors_cross_the_process_boundary(
    client: Client, auth: dict[str, str], workers: list[RunningWorker], tmp_path: Path
) -> None:
    retried = await enqueue(client, auth, "cpu.once_more", marker=str(tmp_path / "m"))
    job = await finished(client, auth, retried["id"])
    assert (job["status"], job["result"], job["attempts"]) == ("succeeded", 2, 2)
    failed = await finished(client, auth, (await enqueue(client, auth, "cpu.boom"))["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert "raised in the task's process" in failed["error"]["traceback"]


async def test_fleet_concurrency_holds_across_workers(
    client: Client, auth: dict[str, str], workers: list[RunningWorker], tmp_path: Path
) -> None:
    # Given two workers, each allowed 8 runs of fleet.hold, and a fleet-wide limit of 2
    marker = tmp_path / "runs"
    ids = [(await enqueue(client, auth, "fleet.hold", marker=str(marker), seconds=0.2))["id"]
           for _ in range(6)]  # fmt: skip
    for job_id in ids:
        assert (await finished(client, auth, job_id))["status"] == "succeeded"
    # Then at no point did more than two run at once
    running, most = 0, 0
    for event in marker.read_text().split():
        running += 1 if event == "start" else -1
        most = max(most, running)
    assert most == 2


async def test_a_dead_holders_slot_comes_back_after_its_lease(
    redis: Redis, settings: Settings
) -> None:
    slots = TaskSlots(redis, QueueKeys(settings.key_prefix), lease_ms=300)
    # Given a holder that took the only slot and died (never renews, never releases)
    assert await slots.acquire("t", "dead", 1)
    assert not await slots.acquire("t", "other", 1)
    # Then a waiter gets it once the lease ran out, and a release frees it at once
    token = await slots.wait("t", 1)
    assert not await slots.renew("t", "dead")
    await slots.release("t", token)
    assert await slots.acquire("t", "third", 1)


def test_a_cpu_bound_task_must_be_a_top_level_plain_function() -> None:
    registry = pulse.Tasks()

    async def coroutine() -> None: ...

    def with_context(ctx: pulse.Context) -> None: ...

    def local() -> None: ...

    cases: list[tuple[Any, str]] = [
        (coroutine, "not async"), (with_context, "no context"), (local, "top level"),
    ]  # fmt: skip
    for fn, reason in cases:
        with pytest.raises(TypeError, match=reason):
            registry.task(name=f"x.{fn.__name__}", cpu_bound=True)(fn)
