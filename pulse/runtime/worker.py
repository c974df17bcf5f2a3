"""A worker process's actors wired together, with the shutdown order that loses nothing.

Shutdown: stop the fetcher (it finishes the read in progress), let deliverers finish what is in
their mailboxes within the grace period, flush the acker, then cancel what is left. Anything
not acknowledged by then stays pending in Redis for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping

import asyncpg
from redis.asyncio import Redis

from pulse.channels.registry import RECEIPT_SPEC, with_tenant_secrets
from pulse.config import Settings
from pulse.core.breaker import BreakerPolicy
from pulse.core.models import RECEIPT_CHANNEL
from pulse.core.ports import Channel, ChannelSpec
from pulse.core.priority import DeficitRoundRobin
from pulse.core.retry import RetryPolicy
from pulse.core.routes import RouteBook, configured_routes
from pulse.metrics import Metrics
from pulse.queue.consumer import Consumer
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.fallbacks import FallbackStreams
from pulse.queue.index import JobIndex
from pulse.queue.keys import QueueKeys
from pulse.queue.lock import ExpiringLock
from pulse.queue.pending import PendingEntries
from pulse.queue.publisher import Publisher
from pulse.runtime.acker import Acker, Transitions
from pulse.runtime.deliverer import Deliverer
from pulse.runtime.delivery_config import DeliveryConfig
from pulse.runtime.dispatcher import Dispatcher
from pulse.runtime.failover import Breakers, Failover
from pulse.runtime.fanout import FanOut
from pulse.runtime.fetcher import Fetcher
from pulse.runtime.leaser import Leaser
from pulse.runtime.reclaimer import Reclaimer
from pulse.runtime.reconciler import Reconciler, ReconcilerSettings
from pulse.runtime.supervisor import Supervisor
from pulse.store.batches import BatchStore
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.ledger import DeliveryLedger
from pulse.store.receipts import ReceiptStore
from pulse.store.routes import RouteStore
from pulse.store.webhook_secrets import WebhookSecretStore

logger = logging.getLogger("pulse.runtime.worker")


def consumer_name(settings: Settings) -> str:
    """Unique per process, so a restarted worker never inherits a dead one's identity."""
    if settings.worker_consumer:
        return settings.worker_consumer
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        pool: asyncpg.Pool,
        channels: Mapping[str, Mapping[str, Channel]],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self.metrics = metrics
        keys = QueueKeys(settings.key_prefix)
        name = consumer_name(settings)
        self.consumer = Consumer(redis, keys, name)
        pending = PendingEntries(redis, keys, name)
        store = DeliveryLedger(pool)
        receipts = ReceiptStore(pool)
        specs = {channel: _spec_of(providers) for channel, providers in channels.items()}
        self.delivery_config = DeliveryConfig(
            RouteStore(pool),
            receipts,
            WebhookSecretStore(pool),
            RouteBook(configured_routes(settings.routes, specs, settings.providers)),
            refresh_s=settings.routes_refresh_s,
            signing_key=settings.receipt_signing_key,
        )
        self._channels = with_tenant_secrets(
            channels,
            settings,
            self.delivery_config.webhook_secrets,
            self.delivery_config.receipt_secrets,
        )
        specs[RECEIPT_CHANNEL] = RECEIPT_SPEC
        self.leaser = Leaser(pending, store, settings.worker_lease_ms)
        publisher = Publisher(redis, keys)
        self.acker = Acker(
            store,
            Transitions(
                self.consumer,
                pending,
                DeadLetterStream(redis, keys),
                FallbackStreams(redis, keys),
                publisher,
            ),
            self.leaser,
            metrics,
            policy=RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s),
            batch_size=settings.worker_ack_batch,
            interval_s=settings.worker_ack_interval_ms / 1000,
            secrets=settings.secret_values(),
            receipt_max_attempts=settings.receipt_max_attempts,
        )
        self.breakers = Breakers(
            BreakerPolicy(settings.breaker_failures, settings.breaker_cooldown_s), metrics
        )
        self.deliverers = {
            channel: Deliverer(
                specs[channel],
                Failover(channel, providers, self.breakers, self.delivery_config.route, metrics),
                self.acker,
                metrics,
                concurrency=settings.worker_concurrency,
                mailbox=settings.worker_mailbox_size,
            )
            for channel, providers in self._channels.items()
        }
        batches = BatchStore(pool)
        dispatcher = Dispatcher(
            store,
            self.deliverers,
            self.acker,
            self.leaser,
            name,
            settings.worker_lease_ms / 1000,
            FanOut(batches, publisher),
        )
        self.fetcher = Fetcher(
            self.consumer,
            dispatcher,
            DeficitRoundRobin(settings.weights(), settings.worker_batch_size),
            batch_size=settings.worker_batch_size,
            block_ms=settings.worker_block_ms,
        )
        self.reclaimer = Reclaimer(
            pending,
            dispatcher,
            keys.streams(),
            lease_ms=settings.worker_lease_ms,
            interval_s=settings.worker_reclaim_interval_ms / 1000,
            batch_size=settings.worker_batch_size,
        )
        reconciler_settings = ReconcilerSettings(
            interval_s=settings.reconcile_interval_s, older_than_s=settings.reconcile_after_s
        )
        self.reconciler = Reconciler(
            store,
            batches,
            JobIndex(redis, keys),
            publisher,
            ExpiringLock(redis, keys.lock("reconciler"), reconciler_settings.lock_ttl_ms),
            reconciler_settings,
            name,
        )
        self._supervisor = Supervisor()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        await self.consumer.ensure_group()
        for adapter in self._adapters():
            await adapter.start()
        try:
            await self.delivery_config.refresh()
        except TRANSIENT_DB_ERRORS as exc:  # default routes meanwhile; the loop tries again
            logger.warning("could not load routes yet: %s", exc)
        self._supervisor.start("delivery-config", self.delivery_config.run)
        self._supervisor.start("acker", self.acker.run)
        self._supervisor.start("leaser", self.leaser.run)
        for name, deliverer in self.deliverers.items():
            self._supervisor.start(f"deliverer:{name}", deliverer.run)
        self._supervisor.start("fetcher", self.fetcher.run)
        self._supervisor.start("reclaimer", self.reclaimer.run)
        self._supervisor.start("reconciler", self.reconciler.run)
        logger.info("worker %s serving channels %s", self.consumer.name, ", ".join(self._channels))
        try:
            await stop.wait()
            await self.shutdown()
        except asyncio.CancelledError:  # a second signal: stop at once, leave work pending
            await self._supervisor.cancel_all()
            await self._close_adapters()  # drops their connections; waits for nobody
            raise

    async def shutdown(self) -> None:
        """Stop taking work, finish what is in hand within the grace period, settle, leave."""
        grace = self._settings.worker_grace_s
        await self._supervisor.cancel("reclaimer", "reconciler")
        self.fetcher.stop()
        logger.debug("shutdown: fetcher asked to stop")
        if not await self._supervisor.wait("fetcher", grace):
            await self._supervisor.cancel("fetcher")
        logger.debug("shutdown: fetcher stopped; draining mailboxes")
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
        await self._supervisor.cancel("leaser", "delivery-config")
        await self._close_adapters()
        logger.info("worker %s stopped", self.consumer.name)

    def _adapters(self) -> list[Channel]:
        return [adapter for providers in self._channels.values() for adapter in providers.values()]

    async def _close_adapters(self) -> None:
        for adapter in self._adapters():
            try:
                await adapter.close()
            except Exception:  # one plugin's failure to close must not keep the others open
                logger.exception("closing %s failed", adapter.spec.name)


def _spec_of(providers: Mapping[str, Channel]) -> ChannelSpec:
    return next(iter(providers.values())).spec
