"""A worker process: its actors wired together (``build_worker``, the composition root), with
the shutdown order that loses nothing.

Shutdown: stop the fetcher (it finishes the read in progress), let deliverers finish what is in
their mailboxes within the grace period, flush the acker, then cancel what is left. Anything
not acknowledged by then stays pending in Redis for another worker.

With ``PULSE_REDIS_PARTITIONS`` > 1 there is one fetcher per partition (each blocks on its own
partition's streams: a blocking read names one slot), all feeding the same dispatcher and
deliverers; the reclaimer, leaser, acker, scheduler and reconciler each serve every partition
(their calls are per stream or per partition, so each script still touches one slot). The
partitions above the configured count that Redis still remembers are served as retiring, and
removed once empty (``retirement.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

from pulse.channels.registry import with_tenant_secrets
from pulse.config import Settings
from pulse.core.breaker import BreakerPolicy
from pulse.core.limits import Rate
from pulse.core.ports import Channel, ChannelSpec
from pulse.core.priority import DeficitRoundRobin
from pulse.core.retry import RetryPolicy
from pulse.core.routes import RouteBook, configured_routes
from pulse.metrics import Metrics
from pulse.queue.buckets import ProviderBuckets
from pulse.queue.caps import RecipientWindows
from pulse.queue.consumer import Consumer
from pulse.queue.due import DueIndex
from pulse.queue.heartbeat import Heartbeats
from pulse.queue.index import JobIndex
from pulse.queue.job_cancels import JobCancels
from pulse.queue.keys import QueueKeys, keys_for
from pulse.queue.live_counts import REFRESH_S, LiveCounts
from pulse.queue.lock import ExpiringLock
from pulse.queue.partitions import PartitionCount
from pulse.queue.pending import PendingEntries
from pulse.queue.publisher import Publisher
from pulse.queue.releases import Releases
from pulse.queue.task_slots import TaskSlots
from pulse.queue.transitions import Transitions
from pulse.runtime.acker import Acker
from pulse.runtime.caps import RecipientCaps
from pulse.runtime.cron import CronScheduler, build_cron
from pulse.runtime.deliverer import Deliverer
from pulse.runtime.delivery_config import DeliveryConfig
from pulse.runtime.dispatcher import Dispatcher
from pulse.runtime.failover import Breakers, Failover
from pulse.runtime.fair_fetcher import fair_fetcher, tenant_streams_of
from pulse.runtime.fanout import FanOut
from pulse.runtime.fetcher import Fetcher
from pulse.runtime.heartbeat import Heartbeat
from pulse.runtime.leaser import Leaser
from pulse.runtime.reclaimer import Reclaimer
from pulse.runtime.reconciler import Reconciler, ReconcilerSettings
from pulse.runtime.reindex import DueReindexer
from pulse.runtime.releaser import Releaser
from pulse.runtime.retention import Retention, RetentionSettings
from pulse.runtime.retirement import Retirement, RetirementSettings
from pulse.runtime.scheduler import Scheduler, SchedulerSettings
from pulse.runtime.supervisor import Supervisor
from pulse.runtime.task_host import TaskHost
from pulse.runtime.task_processes import ProcessPool
from pulse.runtime.task_schedules import registration
from pulse.runtime.throttle import Throttle, known_rates
from pulse.runtime.work import Lane
from pulse.store.batches import BatchStore
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import DeliveryLedger
from pulse.store.receipts import ReceiptStore
from pulse.store.recipient_caps import RecipientCapStore
from pulse.store.retention import PartitionStore
from pulse.store.routes import RouteStore
from pulse.store.scheduled import ScheduledStore
from pulse.store.task_results import TaskResults
from pulse.store.webhook_secrets import WebhookSecretStore
from pulse.tasks import Tasks

logger = logging.getLogger("pulse.runtime.worker")


def consumer_name(settings: Settings) -> str:
    """Unique per process, so a restarted worker never inherits a dead one's identity."""
    if settings.worker_consumer:
        return settings.worker_consumer
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(slots=True)
class Worker:
    """A worker process's actors (wired by ``build_worker``) and the order they start and stop
    in."""

    settings: Settings
    metrics: Metrics
    consumer: Consumer
    channels: Mapping[str, Mapping[str, Channel]]
    delivery_config: DeliveryConfig
    breakers: Breakers
    leaser: Leaser
    acker: Acker
    deliverers: dict[str, Lane]
    fetchers: list[Fetcher]  # one FairFetcher per partition: shared lanes and tenants' sub-streams
    reclaimer: Reclaimer
    reconciler: Reconciler
    heartbeat: Heartbeat
    scheduler: Scheduler
    cron: CronScheduler | None = None
    tasks: TaskHost | None = None  # user tasks (--tasks), read by their own fetcher
    releaser: Releaser | None = None  # streams tasks their parents' end released
    task_fetchers: list[Fetcher] = field(default_factory=list)  # one per partition
    serve_channels: bool = True
    task_schedules: Callable[[], Awaitable[object]] | None = None  # cron entries' registration
    retention: Retention | None = None  # partitions ahead, finished work past the retention
    retirement: Retirement | None = None  # keeps the partition count; removes retiring ones
    _supervisor: Supervisor = field(default_factory=Supervisor)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        await self._prepare()
        self._start_actors()
        channels = ", ".join(self.channels) if self.serve_channels else "none"
        tasks = "none" if self.tasks is None else ", ".join(t.name for t in self.tasks.tasks())
        logger.info("worker %s serving channels %s; tasks %s", self.consumer.name, channels, tasks)
        try:
            await stop.wait()
            await self.shutdown()
        except asyncio.CancelledError:  # a second signal: stop at once, leave work pending
            await self._supervisor.cancel_all()
            await self._close_adapters()  # drops their connections; waits for nobody
            raise

    async def _prepare(self) -> None:
        """Groups, task resources, adapters and routes: what the actors need before they run."""
        for fetcher in self.fetchers:
            await fetcher.consumer.ensure_group()
        if self.tasks is not None and self.task_fetchers:
            for fetcher in self.task_fetchers:
                await fetcher.consumer.ensure_group()
            await self.tasks.start()
            if self.task_schedules is not None:
                await self.task_schedules()
        for adapter in self._adapters():
            await adapter.start()
        try:
            await self.delivery_config.refresh()
        except TRANSIENT_DB_ERRORS as exc:  # default routes meanwhile; the loop tries again
            logger.warning("could not load routes yet: %s", exc)

    def _start_actors(self) -> None:
        start = self._supervisor.start
        if self.tasks is not None and self.task_fetchers:
            start("task-cancels", self.tasks.follow_cancels)
            start("result-sweeper", self.tasks.sweep_results)
        if self.releaser is not None:
            start("releaser", self.releaser.run)
        start("delivery-config", self.delivery_config.run)
        start("acker", self.acker.run)
        start("leaser", self.leaser.run)
        for name, deliverer in self.deliverers.items():
            start(f"deliverer:{name}", deliverer.run)
        for name, fetcher in self._fetchers():
            start(name, fetcher.run)
        start("reclaimer", self.reclaimer.run)
        start("reconciler", self.reconciler.run)
        start("scheduler", self.scheduler.run)
        start("heartbeat", self.heartbeat.run)
        if self.cron is not None:
            start("cron", self.cron.run)
        if self.retention is not None:
            start("retention", self.retention.run)
        if self.retirement is not None:
            start("retirement", self.retirement.run)

    async def shutdown(self) -> None:
        """Stop taking work, finish what is in hand within the grace period, settle, leave."""
        grace = self.settings.worker_grace_s
        await self._supervisor.cancel(
            "reclaimer", "reconciler", "cron", "scheduler", "retention", "retirement"
        )
        if self.releaser is not None:
            await self._supervisor.cancel("releaser")
        for _, fetcher in self._fetchers():
            fetcher.stop()
        for name, _ in self._fetchers():
            if not await self._supervisor.wait(name, grace):
                await self._supervisor.cancel(name)
        logger.debug("shutdown: fetchers stopped; draining mailboxes")
        drains = [d.drain() for d in self.deliverers.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*drains), grace)
        except TimeoutError:
            logger.warning("grace period over: unfinished deliveries stay pending in Redis")
        await self._supervisor.cancel(*(f"deliverer:{name}" for name in self.deliverers))
        logger.debug("shutdown: deliverers stopped; settling")
        await self._supervisor.cancel("acker")
        if not await self.acker.drain(grace):
            logger.warning("could not settle %d results; they stay pending", self.acker.backlog)
        await self._supervisor.cancel("leaser", "delivery-config", "heartbeat")
        if self.tasks is not None:
            await self._supervisor.cancel("task-cancels", "result-sweeper")
            await self.tasks.stop()
        await self._leave()
        await self._close_adapters()
        logger.info("worker %s stopped", self.consumer.name)

    async def _leave(self) -> None:
        """Gone from the workers listed and from the partition counts alive."""
        await self.heartbeat.leave()
        if self.retirement is not None:
            await self.retirement.leave()

    def _fetchers(self) -> list[tuple[str, Fetcher]]:
        """The fetchers this worker runs, by actor name (``fetcher``, ``fetcher:1``...)."""
        named = []
        if self.serve_channels:
            named += [(_actor("fetcher", i), f) for i, f in enumerate(self.fetchers)]
        named += [(_actor("task-fetcher", i), f) for i, f in enumerate(self.task_fetchers)]
        return named

    def _adapters(self) -> list[Channel]:
        return [adapter for providers in self.channels.values() for adapter in providers.values()]

    async def _close_adapters(self) -> None:
        for adapter in self._adapters():
            try:
                await adapter.close()
            except Exception:  # one plugin's failure to close must not keep the others open
                logger.exception("closing %s failed", adapter.spec.name)


def build_worker(
    settings: Settings,
    redis: Redis,
    pool: asyncpg.Pool,
    channels: Mapping[str, Mapping[str, Channel]],
    metrics: Metrics,
    tasks: list[Tasks] | None = None,
    *,
    serve_channels: bool = True,
    keys: QueueKeys | None = None,
) -> Worker:
    """The composition root of a worker process: every actor and what it talks to. With
    ``tasks``, it also serves those registries' tasks from the task streams; without
    ``serve_channels`` it reads no notification stream (a tasks-only worker). ``keys``: the
    settings' keys serving the partitions Redis remembers (``partitions.served_keys``)."""
    name, keys, ledger = (
        consumer_name(settings),
        keys or keys_for(settings),
        DeliveryLedger(pool),
    )
    delivery_config = _delivery_config(settings, pool, channels)
    served = with_tenant_secrets(
        channels, settings, delivery_config.webhook_secrets, delivery_config.receipt_secrets
    )
    publisher = Publisher(redis, keys, fair=settings.tenant_fairness)
    pending = PendingEntries(redis, keys, name)
    leaser = Leaser(pending, ledger, settings.worker_lease_ms)
    transitions = Transitions(redis, keys, name, fair=settings.tenant_fairness)
    acker = _acker(settings, ledger, transitions, leaser, metrics, name)
    breakers = Breakers(
        BreakerPolicy(settings.breaker_failures, settings.breaker_cooldown_s), metrics
    )
    limits = (
        Throttle(ProviderBuckets(redis, keys), _rates(settings, served), metrics),
        RecipientCaps(
            RecipientCapStore(pool), RecipientWindows(redis, keys), metrics,
            settings.routes_refresh_s,
        ),
    )  # fmt: skip
    deliverers: dict[str, Lane] = {
        channel: _deliverer(
            settings, channel, providers, breakers, delivery_config, acker, metrics, limits
        )
        for channel, providers in served.items()
    }
    host = None
    if tasks:
        host = TaskHost(
            tasks, TaskResults(pool), JobCancels(redis, keys), name,
            settings.result_retention_s, settings.result_sweep_interval_s,
            processes=ProcessPool(settings.task_processes),
            slots=TaskSlots(redis, keys, settings.worker_lease_ms),
            max_result_bytes=settings.max_result_bytes,
        )  # fmt: skip
        deliverers |= host.build_lanes(
            acker, metrics, settings.task_concurrency, settings.worker_mailbox_size
        )
    batches = BatchStore(pool)
    due_index = DueIndex(redis, keys, fair=settings.tenant_fairness)
    scheduled = ScheduledStore(pool)
    reindexer = DueReindexer(scheduled, due_index)
    fan_out = FanOut(batches, publisher, due_index)
    lease_s = settings.worker_lease_ms / 1000
    dispatcher = Dispatcher(ledger, deliverers, acker, name, lease_s, fan_out)
    # The fair fetcher reads the tenants' sub-streams whatever PULSE_TENANT_FAIRNESS says (it
    # only governs where producers append), so API and workers never need to agree on it.
    consumers = _consumers(redis, keys, name)
    streams = _reclaimed(keys, serve_channels=serve_channels, tasks=bool(tasks))
    task_fetchers = []
    if host is not None:
        task_fetchers = [
            _fetcher(settings, Consumer(redis, part, name, part.task_streams()), dispatcher)
            for part in keys.partition_keys()
        ]
    fetchers: list[Fetcher] = [
        fair_fetcher(settings, consumer, dispatcher, pool) for consumer in consumers
    ]
    retirement = _retirement(settings, redis, keys, metrics, [*fetchers, *task_fetchers])
    return Worker(
        settings=settings,
        metrics=metrics,
        consumer=consumers[0],
        channels=served,
        delivery_config=delivery_config,
        breakers=breakers,
        leaser=leaser,
        acker=acker,
        deliverers=deliverers,
        fetchers=fetchers,
        reclaimer=_reclaimer(
            settings,
            pending,
            dispatcher,
            streams,
            tenant_streams_of(redis, keys) if serve_channels else None,
        ),
        reconciler=_reconciler(
            settings,
            redis,
            ledger,
            batches,
            keys,
            JobIndex(redis, keys, retirement.reading),
            publisher,
            name,
            reindexer,
        ),
        heartbeat=Heartbeat(
            Heartbeats(redis, keys), name, list(deliverers), lambda: (leaser.held, acker.backlog)
        ),
        scheduler=Scheduler(
            due_index,
            scheduled,
            SchedulerSettings(settings.scheduler_max_sleep_ms / 1000, settings.scheduler_batch),
            name,
            metrics,
        ),
        cron=build_cron(settings, redis, pool, publisher, metrics, name),
        tasks=host,
        releaser=None if host is None else _releaser(settings, pool, redis, keys),
        task_fetchers=task_fetchers,
        serve_channels=serve_channels,
        task_schedules=registration(settings, redis, pool, publisher, metrics, tasks or [], name)
        if host is not None
        else None,
        retention=_retention(settings, redis, pool, keys, metrics),
        retirement=retirement,
    )


def _consumers(redis: Redis, keys: QueueKeys, name: str) -> list[Consumer]:
    """One consumer of the notification streams per partition, with its wake stream (read by
    the fair fetcher)."""
    return [
        Consumer(redis, part, name, [*part.streams(), part.wake()])
        for part in keys.partition_keys()
    ]


def _reclaimed(keys: QueueKeys, *, serve_channels: bool, tasks: bool) -> list[str]:
    """Every stream of every partition the reclaimer looks after."""
    return [
        stream
        for part in keys.partition_keys()
        for stream in (part.streams() if serve_channels else [])
        + (part.task_streams() if tasks else [])
    ]


def _actor(name: str, partition: int) -> str:
    return name if partition == 0 else f"{name}:{partition}"


def _retention(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: QueueKeys, metrics: Metrics
) -> Retention:
    retention_settings = RetentionSettings(
        days=settings.retention_days, interval_s=settings.retention_interval_s
    )
    lock = ExpiringLock(redis, keys.lock("retention"), retention_settings.lock_ttl_ms)
    return Retention(PartitionStore(pool), lock, retention_settings, metrics)


def _retirement(
    settings: Settings, redis: Redis, keys: QueueKeys, metrics: Metrics, fetchers: list[Fetcher]
) -> Retirement:
    """The loop that keeps this worker's partition count in Redis and removes the partitions
    above it once empty."""

    def removed(partition: int) -> None:
        for fetcher in fetchers:
            if fetcher.consumer.keys.partition == partition:
                fetcher.stop()

    interval_s = min(settings.worker_reclaim_interval_ms / 1000, REFRESH_S)  # stay alive
    retirement_settings = RetirementSettings(interval_s)
    lock = ExpiringLock(redis, keys.lock("partitions"), retirement_settings.lock_ttl_ms)
    count, live = PartitionCount(redis, keys), LiveCounts(redis, keys)
    return Retirement(count, live, keys, lock, retirement_settings, metrics, removed)


def _rates(settings: Settings, served: Mapping[str, Mapping[str, Channel]]) -> dict[str, Rate]:
    """Providers' rates, each naming a provider this worker has."""
    names = {name for providers in served.values() for name in providers}
    return known_rates(settings.provider_rates(), names)


def _releaser(settings: Settings, pool: asyncpg.Pool, redis: Redis, keys: QueueKeys) -> Releaser:
    return Releaser(settings.require_database_url(), pool, Releases(redis, keys))


def _delivery_config(
    settings: Settings, pool: asyncpg.Pool, channels: Mapping[str, Mapping[str, Channel]]
) -> DeliveryConfig:
    specs = {channel: _spec_of(providers) for channel, providers in channels.items()}
    return DeliveryConfig(
        RouteStore(pool),
        ReceiptStore(pool),
        WebhookSecretStore(pool),
        RouteBook(configured_routes(settings.routes, specs, settings.providers)),
        refresh_s=settings.routes_refresh_s,
        signing_key=settings.receipt_signing_key,
    )


def _acker(
    settings: Settings,
    ledger: DeliveryLedger,
    transitions: Transitions,
    leaser: Leaser,
    metrics: Metrics,
    name: str,
) -> Acker:
    return Acker(
        ledger,
        transitions,
        leaser,
        metrics,
        worker=name,
        policy=RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s),
        batch_size=settings.worker_ack_batch,
        secrets=settings.secret_values(),
        receipt_max_attempts=settings.receipt_max_attempts,
    )


def _deliverer(
    settings: Settings,
    channel: str,
    providers: Mapping[str, Channel],
    breakers: Breakers,
    delivery_config: DeliveryConfig,
    acker: Acker,
    metrics: Metrics,
    limits: tuple[Throttle, RecipientCaps],
) -> Deliverer:
    return Deliverer(
        _spec_of(providers),
        Failover(channel, providers, breakers, delivery_config.route, metrics, *limits),
        acker,
        metrics,
        concurrency=settings.worker_concurrency,
        mailbox=settings.worker_mailbox_size,
    )


def _fetcher(settings: Settings, consumer: Consumer, dispatcher: Dispatcher) -> Fetcher:
    return Fetcher(
        consumer,
        dispatcher,
        DeficitRoundRobin(settings.weights(), settings.worker_batch_size),
        batch_size=settings.worker_batch_size,
        block_ms=settings.worker_block_ms,
    )


def _reclaimer(
    settings: Settings,
    pending: PendingEntries,
    dispatcher: Dispatcher,
    streams: list[str],
    more: Callable[[], Awaitable[list[str]]] | None = None,
) -> Reclaimer:
    return Reclaimer(
        pending,
        dispatcher,
        streams,
        lease_ms=settings.worker_lease_ms,
        interval_s=settings.worker_reclaim_interval_ms / 1000,
        batch_size=settings.worker_batch_size,
        more=more,
    )


def _reconciler(
    settings: Settings,
    redis: Redis,
    ledger: DeliveryLedger,
    batches: BatchStore,
    keys: QueueKeys,
    index: JobIndex,
    publisher: Publisher,
    name: str,
    reindexer: DueReindexer,
) -> Reconciler:
    reconciler_settings = ReconcilerSettings(
        interval_s=settings.reconcile_interval_s, older_than_s=settings.reconcile_after_s
    )
    return Reconciler(
        ledger,
        batches,
        index,
        publisher,
        ExpiringLock(redis, keys.lock("reconciler"), reconciler_settings.lock_ttl_ms),
        reconciler_settings,
        name,
        reindexer,
    )


def _spec_of(providers: Mapping[str, Channel]) -> ChannelSpec:
    return next(iter(providers.values())).spec
