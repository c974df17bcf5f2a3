"""Lowering PULSE_REDIS_PARTITIONS with processes on two counts at once (a rolling restart, or
the API lowered after the workers): no partition is removed while a process counting above it
runs, and each is removed once the last such process has stopped or died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.timeutil import now_ms
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.live_counts import WINDOW_MS, LiveCounts
from pulse.queue.lock import ExpiringLock
from pulse.queue.partitions import PartitionCount, served_keys
from pulse.queue.publisher import Publisher
from pulse.runtime.retirement import Retirement, RetirementSettings
from tests.conftest import log_job

pytestmark = pytest.mark.integration


def lowered_worker(
    redis: Redis, prefix: str, removed: list[int], clock: Callable[[], int] = now_ms
) -> Retirement:
    """The retirement loop of a worker on one partition that started while Redis remembered
    three (as ``pulse worker`` builds it)."""
    keys = QueueKeys(prefix, partitions=1).serving_up_to(3)
    return Retirement(
        PartitionCount(redis, keys),
        LiveCounts(redis, keys, clock),
        keys,
        ExpiringLock(redis, keys.lock("partitions"), 30_000),
        RetirementSettings(),
        Metrics(),
        removed.append,
    )


async def counted(redis: Redis, prefix: str) -> int:
    return int(await redis.get(QueueKeys(prefix).partition_count()) or 0)


async def test_a_worker_on_fewer_partitions_removes_none_while_one_on_more_runs(
    redis: Redis, settings: Settings
) -> None:
    # Given a worker on three partitions running (alive with its count), partitions 1 and 2
    # empty, and a worker on one partition
    prefix = settings.key_prefix
    three = QueueKeys(prefix, partitions=3)
    await PartitionCount(redis, three).remember()
    other = LiveCounts(redis, three)
    await other.refresh()
    removed: list[int] = []
    lowered = lowered_worker(redis, prefix, removed)

    # When the lowered worker runs its passes while the other one runs
    for _ in range(3):
        await lowered.run_once()

    # Then nothing is removed: the lowered worker still reads partitions 1 and 2
    assert removed == []
    assert lowered.retiring == [1, 2]
    assert await counted(redis, prefix) == 3
    # and what the three-partition worker appends to partition 2 is still read
    job = next(j for j in iter(log_job, None) if three.partition_of(j.id) == 2)
    await Publisher(redis, three).publish([job])
    await lowered.run_once()
    assert lowered.retiring == [1, 2]

    # When the three-partition worker stops
    await other.leave()
    await lowered.run_once()

    # Then the empty partition 1 goes; partition 2 stays until its job is served
    assert await counted(redis, prefix) == 3
    assert lowered.retiring == [1, 2]
    await redis.delete(*three.part(2).streams(), three.part(2).index())  # served and acked
    await lowered.run_once()
    assert removed == [2, 1]
    assert lowered.retiring == []
    assert await counted(redis, prefix) == 1


async def test_a_worker_on_more_partitions_is_alive_from_its_start(
    redis: Redis, settings: Settings
) -> None:
    # Given a worker on one partition serving 1 and 2 as retiring
    prefix = settings.key_prefix
    await PartitionCount(redis, QueueKeys(prefix, partitions=3)).remember()
    removed: list[int] = []
    lowered = lowered_worker(redis, prefix, removed)

    # When a worker on three starts (``pulse worker`` reads its keys before anything runs)
    keys = await served_keys(redis, QueueKeys(prefix, partitions=3))

    # Then the lowered worker's next pass leaves its partitions alone, before that worker's
    # loops have run once
    await lowered.run_once()
    assert keys.span == 3
    assert removed == []
    assert lowered.retiring == [1, 2]


async def live_counts(redis: Redis, prefix: str) -> list[str]:
    """The partition counts of the processes Redis counts as alive."""
    members: Any = await redis.zrange(QueueKeys(prefix).partition_counts(), 0, -1)
    return sorted(member.decode().split(":")[0] for member in members)


async def test_a_process_that_died_stops_keeping_partitions_after_the_window(
    redis: Redis, settings: Settings
) -> None:
    # Given a process on three partitions last seen at t, which never left
    prefix = settings.key_prefix
    three = QueueKeys(prefix, partitions=3)
    await PartitionCount(redis, three).remember()
    t = now_ms()
    await LiveCounts(redis, three, lambda: t).refresh()

    # When a worker on one partition looks within the window, then after it
    removed: list[int] = []
    await lowered_worker(redis, prefix, removed, lambda: t + WINDOW_MS).run_once()
    within = list(removed)
    await lowered_worker(redis, prefix, removed, lambda: t + WINDOW_MS + 1).run_once()

    # Then it removes nothing within the window, and both partitions once it is over
    assert within == []
    assert removed == [2, 1]
    assert await counted(redis, prefix) == 1
    assert await live_counts(redis, prefix) == ["1"]  # the dead one pruned


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_an_api_on_more_partitions_keeps_them_while_it_runs(
    redis: Redis, settings: Settings
) -> None:
    # Given an API still on three partitions (lowered after the workers)
    prefix = settings.key_prefix
    async with api(msgspec.structs.replace(settings, redis_partitions=3)):
        for _ in range(200):  # its first refresh runs as it starts
            if await live_counts(redis, prefix) == ["3"]:
                break
            await asyncio.sleep(0.01)
        assert await live_counts(redis, prefix) == ["3"]

        # When a worker on one partition runs a pass
        removed: list[int] = []
        lowered = lowered_worker(redis, prefix, removed)
        await lowered.run_once()

        # Then it removes nothing the API may append to
        assert removed == []
        assert await counted(redis, prefix) == 3

    # and once the API has stopped, its count is gone and the partitions are removed
    assert await live_counts(redis, prefix) == ["1"]
    await lowered.run_once()
    assert removed == [2, 1]
