"""The notification fetcher of every worker: weighted DRR over the priorities
(``pulse.core.priority``) and, inside each, weighted DRR over its lanes
(``pulse.core.tenant_share``): one sub-stream per tenant with work, plus the priority's own
stream (weight 1), which receives what producers append with ``PULSE_TENANT_FAIRNESS`` off
(and what an older API appended). It reads both whatever the setting says, so the setting can
change on the API and the workers in any order.

A round costs one round trip: every lane's share, planned from the sets of active tenants the
previous round read, and the sets again; a lane the sets show new is read at once, in a second
trip, so a new tenant is read in the round that first sees it. When every lane is empty it
blocks on the priority streams, the sub-streams it knows and the wake stream (a tenant's first
append adds an entry there), so no timer lies between an append and its claim. A tenant whose
lane reads empty has its sub-stream retired when nothing of it is left in flight
(``retire_tenant.lua``): idle tenants cost Redis nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pulse.config import Settings
from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY
from pulse.core.priority import DeficitRoundRobin
from pulse.core.tenant_share import PROBE, TenantShare
from pulse.queue.consumer import Consumer, Entry
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import is_nogroup
from pulse.queue.tenant_streams import TenantStreams
from pulse.runtime.dispatcher import Dispatcher
from pulse.runtime.fetcher import Fetcher
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.tenant_weights import TenantWeights

logger = logging.getLogger("pulse.runtime.fair_fetcher")
SHARED = ""  # the lane of the priority's own stream
PRIORITIES = range(MIN_PRIORITY, MAX_PRIORITY + 1)
WEIGHTS_REFRESH_S = 10.0  # a weight set by an operator is in force within this long

Weights = Callable[[], Awaitable[dict[str, int]]]


class FairFetcher(Fetcher):
    """The fetcher's loop (room, backoff, dispatch) with a round over tenants' lanes."""

    def __init__(
        self,
        consumer: Consumer,
        dispatcher: Dispatcher,
        scheduler: DeficitRoundRobin,
        tenant_streams: TenantStreams,
        *,
        batch_size: int,
        block_ms: int,
        weights: Weights | None = None,
    ) -> None:
        super().__init__(consumer, dispatcher, scheduler, batch_size=batch_size, block_ms=block_ms)
        self._tenants = tenant_streams
        self._keys = consumer.keys
        self._load_weights = weights
        self._weights: dict[str, int] = {}
        self._weights_at = -WEIGHTS_REFRESH_S
        self._shares = [TenantShare(self._weights) for _ in PRIORITIES]
        self._active: dict[int, list[str]] = {p: [] for p in PRIORITIES}  # as last read
        self._shared = frozenset(self._keys.streams())
        self._dry: dict[int, list[str]] = {}

    async def _fetch(self) -> list[Entry]:
        await self._refresh_weights()
        return await super()._fetch()

    async def _recovered(self, exc: ResponseError) -> bool:
        if not is_nogroup(exc):
            return False
        await self._consumer.regroup()  # Redis restarted empty, a lane or a partition retired
        return True

    async def _after_round(self) -> None:
        await self._retire_dry()

    def _lane(self, priority: int, tenant: str) -> str:
        if tenant == SHARED:
            return self._keys.stream(priority)
        return self._keys.tenant_stream(priority, tenant)

    async def _read_round(self) -> list[Entry]:
        asked_levels = self._scheduler.plan()
        plans: list[dict[str, int]] = []
        counts: dict[str, int] = {}
        lanes: dict[str, tuple[int, str]] = {}
        for level, priority in enumerate(PRIORITIES):
            lanes_here = [SHARED, *self._active[priority]]
            plan = self._shares[level].plan(lanes_here, asked_levels[level])
            plans.append(plan)
            for tenant, count in plan.items():
                stream = self._lane(priority, tenant)
                counts[stream] = count
                lanes[stream] = (level, tenant)
        read = await self._tenants.read_round(self._consumer.name, counts)
        planned, self._active = self._active, read.active  # the next round's lanes
        if any(stream in self._shared for stream in read.missing):
            await self._consumer.regroup()  # Redis restarted empty (a sub-stream without
            # its group was retired meanwhile: it just read as empty)
        entries = read.entries + await self._read_new(planned, asked_levels, lanes)
        got_lanes = Counter(lanes[entry.stream] for entry in entries)
        got_levels: Counter[int] = Counter()
        for (level, _), count in got_lanes.items():
            got_levels[level] += count
        self._dry = {}
        for level, plan in enumerate(plans):
            got = {tenant: got_lanes[(level, tenant)] for tenant in plan}
            self._shares[level].served(plan, got)
            empty = [t for t, n in got.items() if n == 0 and t != SHARED]
            if empty:
                self._dry[PRIORITIES[level]] = empty
        self._scheduler.served(asked_levels, got_levels)
        return entries

    async def _read_new(
        self,
        planned: dict[int, list[str]],
        asked_levels: list[int],
        lanes: dict[str, tuple[int, str]],
    ) -> list[Entry]:
        """Read at once the lanes that appeared since the sets this round was planned from,
        each for an even part of its priority's share (one round trip more, only in a round
        whose sets grew, of the lanes alone: the round read the sets): a new tenant, or a
        tenant's first notification of another priority (a critical one), waits no round
        longer than if the sets were read before the lanes."""
        counts: dict[str, int] = {}
        for level, priority in enumerate(PRIORITIES):
            known = set(planned[priority])
            new = [tenant for tenant in self._active[priority] if tenant not in known]
            new = new[: max(PROBE, asked_levels[level])]  # the rest: by the next round's plan
            each = max(PROBE, asked_levels[level] // (len(self._active[priority]) + 1))
            for tenant in new:
                stream = self._lane(priority, tenant)
                counts[stream] = each
                lanes[stream] = (level, tenant)
        if not counts:
            return []
        entries, _ = await self._tenants.read(self._consumer.name, counts)
        return entries

    async def _wait(self) -> list[Entry]:
        streams = [*self._keys.streams(), self._keys.wake()]
        streams += self._tenants.streams_of(self._active)
        return await self._tenants.wait(
            self._consumer.name, streams, self._batch_size, self._block_ms
        )

    async def _retire_dry(self) -> None:
        """Drop the sub-streams that read empty and hold nothing in flight (every priority's
        in one round trip)."""
        dry, self._dry = self._dry, {}
        try:
            await self._tenants.retire_each(dry)
        except TRANSIENT_REDIS_ERRORS as exc:
            logger.warning("could not retire idle tenant streams: %s", exc)

    async def _refresh_weights(self) -> None:
        if self._load_weights is None or time.monotonic() - self._weights_at < WEIGHTS_REFRESH_S:
            return
        self._weights_at = time.monotonic()
        try:
            fresh = await self._load_weights()
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning("tenant weights unreadable (%s); the last known stay in force", exc)
            return
        self._weights.clear()
        self._weights.update(fresh)


def fair_fetcher(
    settings: Settings, consumer: Consumer, dispatcher: Dispatcher, pool: asyncpg.Pool
) -> FairFetcher:
    """The notification fetcher of a worker (whatever ``PULSE_TENANT_FAIRNESS`` says)."""
    return FairFetcher(
        consumer,
        dispatcher,
        DeficitRoundRobin(settings.weights(), settings.worker_batch_size),
        TenantStreams(consumer.redis, consumer.keys),
        batch_size=settings.worker_batch_size,
        block_ms=settings.worker_block_ms,
        weights=TenantWeights(pool).differing,
    )


def tenant_streams_of(redis: Redis, keys: QueueKeys) -> Callable[[], Awaitable[list[str]]]:
    """What the reclaimer asks on each pass for the tenants' sub-streams of every partition."""
    partitions = [TenantStreams(redis, part) for part in keys.partition_keys()]

    async def streams() -> list[str]:
        return [s for each in partitions for s in each.streams_of(await each.active())]

    return streams
