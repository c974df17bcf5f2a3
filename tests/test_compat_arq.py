"""pulse.compat.arq: an arq WorkerSettings module runs on Pulse and arq's enqueue_job works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.client import AsyncPulseClient
from pulse.compat.arq import ArqPool, tasks_from
from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.task_host import load_registries
from pulse.runtime.worker import build_worker
from pulse.store.tenants import NewTenant
from tests.conftest import Client, RunningWorker

pytestmark = pytest.mark.integration


@pytest.fixture
async def arq_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> AsyncIterator[RunningWorker]:
    # Given the arq module loaded as `pulse worker --tasks tests.arq_example` loads it, its
    # cron jobs registered under the tenant PULSE_ARQ_TENANT names
    registries = load_registries("tests.arq_example")
    stop = asyncio.Event()
    chosen = msgspec.structs.replace(settings, arq_tenant=tenant.name)
    instance = build_worker(chosen, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    for _ in range(300):
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE name = 'patient'"):
            break
        await asyncio.sleep(0.02)
    yield running
    await running.shutdown()


@pytest.fixture
async def arq_pool(client: Client, tenant: NewTenant) -> AsyncIterator[ArqPool]:
    base = str(client.make_url("")).rstrip("/")
    async with ArqPool(AsyncPulseClient(base, tenant.api_key)) as pool:
        yield pool  # closed as arq's pool is, its client's session with it


async def test_positional_and_keyword_arguments_reach_the_function(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    job = await arq_pool.enqueue_job("add", 40, b=2)
    assert job is not None
    assert await job.result(timeout=20) == 42


async def test_the_ctx_dict_holds_startup_resources_and_the_jobs_own_keys(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    job = await arq_pool.enqueue_job("describe", "hello", "arq", sep="-")
    assert job is not None
    result = await job.result(timeout=20)
    assert result["text"] == "hello-arq"
    assert result["session"] == "a shared client"
    assert result["job_id"] == job.job_id
    assert result["job_try"] == 1
    assert result["enqueued"].startswith("20")


async def test_retry_with_defer_runs_the_job_again(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    job = await arq_pool.enqueue_job("patient", 3)
    assert job is not None
    assert await job.result(timeout=20) == 3
    assert await job.status() == "succeeded"


async def test_a_job_id_is_enqueued_once(arq_worker: RunningWorker, arq_pool: ArqPool) -> None:
    first = await arq_pool.enqueue_job("add", 1, _job_id="unique-1")
    assert first is not None
    assert await arq_pool.enqueue_job("add", 1, _job_id="unique-1") is None
    assert await arq_pool.enqueue_job("add", 2, _job_id="unique-1") is None
    assert await first.result(timeout=20) == 1


async def test_defer_by_and_defer_until_run_the_job_not_before_then(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    # Given jobs deferred arq's two ways (seconds, timedelta, an aware and a naive local time)
    start = datetime.now(UTC)
    by_seconds = await arq_pool.enqueue_job("add", 1, _defer_by=0.5)
    by_delta = await arq_pool.enqueue_job("add", 2, _defer_by=timedelta(milliseconds=500))
    until = await arq_pool.enqueue_job("add", 3, _defer_until=start + timedelta(seconds=0.5))
    naive = (start + timedelta(seconds=0.5)).astimezone().replace(tzinfo=None)
    until_local = await arq_pool.enqueue_job("add", 4, _defer_until=naive)
    jobs = [by_seconds, by_delta, until, until_local]
    # Then each waits 'scheduled', then runs once with its result, not before its time
    for job, expected in zip(jobs, [1, 2, 3, 4], strict=True):
        assert job is not None
        assert (await job.info()).status in {"scheduled", "queued", "running", "succeeded"}
        assert await job.result(timeout=20) == expected
        started = (await job.info()).started_at
        assert started is not None
        assert datetime.fromisoformat(started) >= start + timedelta(seconds=0.5)


async def test_a_deferred_job_can_be_aborted_before_it_runs(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    job = await arq_pool.enqueue_job("add", 1, _defer_by=60)
    assert job is not None
    assert await job.status() == "scheduled"
    assert await job.abort()
    assert await job.status() == "cancelled"


async def test_what_pulse_cannot_carry_over_is_refused_not_ignored(
    arq_worker: RunningWorker, arq_pool: ArqPool
) -> None:
    with pytest.raises(NotImplementedError, match="named queues"):
        await arq_pool.enqueue_job("add", 1, _queue_name="arq:queue")


def test_settings_map_to_task_options() -> None:
    from tests import arq_example

    registry = tasks_from(arq_example.WorkerSettings)
    add, patient = registry.get("add"), registry.get("patient")
    assert add is not None
    assert patient is not None
    assert (add.options.max_attempts, add.options.timeout_s) == (2, 60)
    assert (patient.options.max_attempts, patient.options.timeout_s) == (4, 30)
    assert add.options.concurrency == 3  # max_jobs
