"""A task module's cron entries (arq's ``cron_jobs``) as job schedules, registered when a worker
starts, after it published its tasks (a schedule's job is checked against them when it fires).

Each entry's schedule id is a UUIDv5 of the deployment's key prefix, the tenant and the entry's
name, so every worker registers the same row: created once, its expression updated when it
changed (counting from now), left alone otherwise. ``run_at_startup`` enqueues the task once
per worker start (keyed by the schedule and the worker, so a retried start adds none).

Each schedule remembers the module that declared it (its origin): a module's schedule whose
entry was removed from the code is deleted when a worker loading that module starts under the
same tenant, as arq and Celery beat stop a removed cron job.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import msgspec
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.cron import expression, next_times
from pulse.core.jobs import JobRequest
from pulse.core.timeutil import utcnow
from pulse.core.zones import zone
from pulse.metrics import Metrics
from pulse.queue.job_cancels import JobCancels
from pulse.queue.keys import keys_for
from pulse.queue.publisher import Publisher
from pulse.services.accept import AcceptService, IdempotencyKey, fingerprint
from pulse.services.tasks import TaskService
from pulse.store.batches import BatchStore
from pulse.store.idempotency import IdempotencyStore
from pulse.store.jobs import JobStore
from pulse.store.notifications import NotificationStore
from pulse.store.schedules import JobTemplate, Schedule, ScheduleStore
from pulse.tasks import Tasks
from pulse.tasks.schedules import CronEntry

logger = logging.getLogger("pulse.runtime.task_schedules")
NAMESPACE = uuid.UUID("5b0f3c1e-6a0d-4c36-9a57-0c2f4e3b8d21")
TENANT_SETTING = "PULSE_ARQ_TENANT"


def entries(registries: Sequence[Tasks]) -> list[CronEntry]:
    return [entry for registry in registries for entry in registry.schedules]


def check_settings(settings: Settings, registries: Sequence[Tasks]) -> None:
    """A start-up error when cron entries have no tenant to belong to."""
    if entries(registries) and not settings.arq_tenant:
        names = ", ".join(entry.name for entry in entries(registries))
        raise ValueError(
            f"cron jobs ({names}) need a tenant to enqueue under: set {TENANT_SETTING}"
            " to a tenant's name or id"
        )


def registration(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, publisher: Publisher,
    metrics: Metrics, registries: Sequence[Tasks], worker: str,
) -> Callable[[], Awaitable[list[Schedule]]] | None:  # fmt: skip
    """What a worker runs once at start to register its modules' cron entries and retire the
    ones removed from them (None: nothing to do); a start-up error now if they have no tenant."""
    if not entries(registries) and not (settings.arq_tenant and _modules(registries)):
        return None
    check_settings(settings, registries)
    accept = AcceptService(
        NotificationStore(pool), BatchStore(pool),
        IdempotencyStore(pool, settings.idempotency_retention_s), publisher, metrics,
        group_commit=False,
    )  # fmt: skip
    keys = keys_for(settings)
    tasks = TaskService(
        accept, NotificationStore(pool), JobStore(pool), JobCancels(redis, keys), metrics
    )
    return lambda: register(settings, pool, tasks, registries, worker)


def schedule_id(deployment: str, tenant_id: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{deployment}\n{tenant_id}\n{name}"))


async def tenant_of(pool: asyncpg.Pool, name_or_id: str) -> str:
    try:
        tenant_id = str(uuid.UUID(name_or_id))
    except ValueError:
        tenant_id = None
    found: str | None = await pool.fetchval(
        "SELECT id::text FROM tenants WHERE id = $1::uuid OR name = $2 LIMIT 1",
        tenant_id, name_or_id,
    )  # fmt: skip
    if found is None:
        raise ValueError(f"{TENANT_SETTING}={name_or_id!r}: no such tenant")
    return found


async def register(
    settings: Settings, pool: asyncpg.Pool, tasks: TaskService, registries: Sequence[Tasks],
    worker: str,
) -> list[Schedule]:  # fmt: skip
    """Create or update each entry's schedule; enqueue the ``run_at_startup`` ones; delete
    the schedules the loaded modules declared before but no longer do."""
    check_settings(settings, registries)
    if settings.arq_tenant is None:
        return []  # no entries (check_settings), and no tenant to retire schedules of
    tenant_id = await tenant_of(pool, settings.arq_tenant)
    store = ScheduleStore(pool)
    registered = []
    for registry in registries:
        made = [
            await _register(store, settings, tasks, tenant_id, entry, worker)
            for entry in registry.schedules
        ]
        registered.extend(made)
        if registry.module is None:
            continue
        for schedule in made:
            await store.adopt(schedule.id, registry.module)
        keep = [schedule.id for schedule in made]
        for gone in await store.retire(tenant_id, settings.key_prefix, registry.module, keep):
            logger.info("schedule %s: its cron job left %s, deleted", gone, registry.module)
    return registered


def _modules(registries: Sequence[Tasks]) -> list[str]:
    return [registry.module for registry in registries if registry.module is not None]


async def _register(
    store: ScheduleStore, settings: Settings, tasks: TaskService, tenant_id: str,
    entry: CronEntry, worker: str,
) -> Schedule:  # fmt: skip
    schedule = await _upsert(store, settings.key_prefix, tenant_id, entry)
    if entry.run_at_startup:
        key = f"schedule:{schedule.id}:startup:{worker}"
        await tasks.enqueue(
            tenant_id, JobRequest(task=entry.task), IdempotencyKey(key, fingerprint([key]))
        )
    logger.info("cron job %s: schedule %s (%s)", entry.name, schedule.id, entry.cron)
    return schedule


async def _upsert(
    store: ScheduleStore, deployment: str, tenant_id: str, entry: CronEntry
) -> Schedule:
    sid = schedule_id(deployment, tenant_id, entry.name)
    try:
        cron = expression(entry.cron)
    except ValueError as exc:
        raise ValueError(f"cron job {entry.name!r}: {exc}") from None
    job = msgspec.json.encode(JobTemplate(task=entry.task)).decode()
    for _ in range(3):  # twin workers starting together: one creates, the other updates
        now = utcnow()
        old = await store.get(tenant_id, sid)
        if old is not None and (old.cron, old.job) == (cron, job):
            return old
        cursor = now if old is None else max(old.cursor_at, now)
        upcoming = next_times(cron, zone("UTC"), cursor, None, 1)
        if old is None:
            new = Schedule(
                id=sid, tenant_id=tenant_id, cron=cron, timezone="UTC", notification=None,
                job=job, starts_at=None, ends_at=None, misfire="skip", catch_up_limit=1,
                paused=False, cursor_at=cursor, next_fire_at=upcoming[0],
            )  # fmt: skip
            try:
                created = await store.create(new, deployment)
            except asyncpg.UniqueViolationError:
                continue
            assert created is not None
            return created
        changed = msgspec.structs.replace(
            old, cron=cron, job=job, notification=None, cursor_at=cursor,
            next_fire_at=upcoming[0],
        )  # fmt: skip
        written = await store.replace(changed)
        if written is not None:
            return written
    raise RuntimeError(f"cron job {entry.name}: its schedule kept changing under registration")
