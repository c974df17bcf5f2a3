"""arq's ``cron_jobs`` on Pulse: registered at worker start as job schedules of the tenant
``PULSE_ARQ_TENANT`` names, keyed by name (registering again updates the time), enqueued once at
start with ``run_at_startup``; what 5-field cron cannot say is refused at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.compat.arq import cron, tasks_from
from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.task_host import load_registries
from pulse.runtime.task_schedules import schedule_id
from pulse.runtime.worker import build_worker
from pulse.store.schedules import ScheduleStore
from pulse.store.tenants import NewTenant, TenantStore
from tests import arq_example
from tests.conftest import ROOT, Client, RunningWorker
from tests.test_tasks import finished
from tests.test_tasks_processes import worker_env

pytestmark = pytest.mark.integration


async def tick(ctx: dict[str, Any]) -> None:
    return None


@pytest.fixture
async def started(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> AsyncIterator[Settings]:
    """A worker serving tests.arq_example, its cron jobs under ``tenant`` (named by its id)."""
    chosen = msgspec.structs.replace(settings, arq_tenant=tenant.tenant_id)
    registries = load_registries("tests.arq_example")
    stop = asyncio.Event()
    instance = build_worker(chosen, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
    sid = schedule_id(settings.key_prefix, tenant.tenant_id, "heartbeat")
    for _ in range(300):
        if await ScheduleStore(pool).get(tenant.tenant_id, sid) is not None:
            break
        await asyncio.sleep(0.02)
    yield chosen
    await running.shutdown()


async def test_a_cron_job_becomes_a_job_schedule_of_the_tenant(
    started: Settings, pool: asyncpg.Pool, tenant: NewTenant, client: Client,
    auth: dict[str, str],
) -> None:  # fmt: skip
    sid = schedule_id(started.key_prefix, tenant.tenant_id, "heartbeat")
    response = await client.get(f"/api/schedules/{sid}", headers=auth)
    assert response.status == 200
    document = await response.json()
    assert document["cron"] == "0,30 * * * *"
    assert document["timezone"] == "UTC"
    assert document["job"]["task"] == "heartbeat"
    assert document["notification"] is None


async def test_run_at_startup_enqueues_the_job_once_and_it_runs(
    started: Settings, pool: asyncpg.Pool, tenant: NewTenant, client: Client,
    auth: dict[str, str],
) -> None:  # fmt: skip
    ids = [
        row["id"]
        for row in await pool.fetch(
            "SELECT id::text AS id FROM notifications WHERE tenant_id = $1"
            " AND channel = 'task:heartbeat'",
            tenant.tenant_id,
        )
    ]
    assert len(ids) == 1
    job = await finished(client, auth, ids[0])
    assert job["status"] == "succeeded"
    assert job["result"] == "beat a shared client"


async def test_registering_again_updates_the_time_of_the_same_schedule(
    started: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given the module's heartbeat registered; When a worker starts with it every 5 minutes
    class Moved:
        cron_jobs = [cron(arq_example.heartbeat, name="heartbeat", minute=set(range(0, 60, 5)))]

    instance = build_worker(
        started, redis, pool, {}, Metrics(), [tasks_from(Moved)], serve_channels=False
    )
    assert instance.task_schedules is not None
    await instance.task_schedules()
    # Then the one schedule (same id) has the new expression
    store = ScheduleStore(pool)
    sid = schedule_id(started.key_prefix, tenant.tenant_id, "heartbeat")
    row = await store.get(tenant.tenant_id, sid)
    assert row is not None
    assert row.cron == "0,5,10,15,20,25,30,35,40,45,50,55 * * * *"
    assert len(await store.page(tenant.tenant_id, None, 100)) == 1


def test_cron_jobs_without_a_tenant_are_a_start_up_error(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    registries = load_registries("tests.arq_example")
    with pytest.raises(ValueError, match="PULSE_ARQ_TENANT"):
        build_worker(settings, redis, pool, {}, Metrics(), registries, serve_channels=False)


def test_pulse_worker_with_cron_jobs_and_no_tenant_stops_naming_the_setting(
    settings: Settings,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulse", "worker", "--no-channels", "--tasks", "tests.arq_example"],
        env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "PULSE_ARQ_TENANT" in done.stderr
    assert "heartbeat" in done.stderr


def test_arq_fields_become_five_field_cron() -> None:
    assert cron(tick, hour=9, minute=0, weekday="mon").expression == "0 9 * * 1"
    assert cron(tick, minute={15, 45}, weekday={5, 6}).expression == "15,45 * * * 0,6"
    assert cron(tick, day=1, month={1, 7}, hour=0, minute=0).expression == "0 0 1 1,7 *"
    assert cron(tick).name == "cron:tick"


def test_a_second_other_than_zero_is_refused_naming_the_job() -> None:
    with pytest.raises(ValueError, match=r"'every-ten-seconds'.*second"):
        cron(tick, name="every-ten-seconds", second={0, 10, 20, 30, 40, 50})
    with pytest.raises(ValueError, match="'cron:tick'"):
        cron(tick, second=None)


async def test_a_cron_job_removed_from_its_module_is_deleted_at_the_next_start(
    started: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant, client: Client,
    auth: dict[str, str],
) -> None:  # fmt: skip
    # Given the module's heartbeat registered, a schedule made through the API and one that
    # another module declared
    store = ScheduleStore(pool)
    heartbeat = schedule_id(started.key_prefix, tenant.tenant_id, "heartbeat")
    body = {"cron": "0 9 * * *", "job": {"task": "heartbeat"}}
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 201, await response.text()
    by_hand = (await response.json())["id"]

    class Other:
        cron_jobs = [cron(arq_example.heartbeat, name="nightly", hour=3, minute=0)]

    other = tasks_from(Other)
    other.module = "tests.other_module"
    instance = build_worker(started, redis, pool, {}, Metrics(), [other], serve_channels=False)
    assert instance.task_schedules is not None
    await instance.task_schedules()
    nightly = schedule_id(started.key_prefix, tenant.tenant_id, "nightly")
    assert await store.get(tenant.tenant_id, nightly) is not None

    # When a worker starts with tests.arq_example whose cron_jobs no longer hold heartbeat
    class Emptied:
        cron_jobs: list[Any] = []

    emptied = tasks_from(Emptied)
    emptied.module = "tests.arq_example"
    instance = build_worker(started, redis, pool, {}, Metrics(), [emptied], serve_channels=False)
    assert instance.task_schedules is not None
    await instance.task_schedules()

    # Then heartbeat's schedule is gone; the API's and the other module's stay
    assert await store.get(tenant.tenant_id, heartbeat) is None
    assert (await client.get(f"/api/schedules/{heartbeat}", headers=auth)).status == 404
    assert await store.get(tenant.tenant_id, by_hand) is not None
    assert await store.get(tenant.tenant_id, nightly) is not None


async def test_another_tenant_or_no_tenant_never_retires_a_tenants_cron_jobs(
    started: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    # Given the module's heartbeat registered under the tenant PULSE_ARQ_TENANT named
    store = ScheduleStore(pool)
    heartbeat = schedule_id(started.key_prefix, tenant.tenant_id, "heartbeat")
    assert await store.get(tenant.tenant_id, heartbeat) is not None

    class Emptied:
        functions = [arq_example.add]

    emptied = tasks_from(Emptied)
    emptied.module = "tests.arq_example"
    other = await TenantStore(pool).create(f"other-{tenant.tenant_id[:8]}")
    # When the same module, without its cron job, starts under another tenant, or under none
    for chosen in (
        msgspec.structs.replace(started, arq_tenant=other.tenant_id),
        msgspec.structs.replace(started, arq_tenant=None),
    ):
        instance = build_worker(chosen, redis, pool, {}, Metrics(), [emptied], serve_channels=False)
        if instance.task_schedules is not None:
            await instance.task_schedules()

    # Then the tenant's schedule stays: only a worker of that tenant retires it
    assert await store.get(tenant.tenant_id, heartbeat) is not None
