"""The live partition counts, from a review: what a worker on fewer partitions still reads once
a process on more appends to partitions it had removed, or after Redis lost the remembered
count, and that no host's clock decides whether a process is alive."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.queue.index import JobIndex
from pulse.queue.keys import QueueKeys
from pulse.queue.live_counts import LiveCounts
from pulse.queue.lock import ExpiringLock
from pulse.queue.partitions import PartitionCount, served_keys
from pulse.queue.publisher import Publisher
from pulse.runtime.retirement import Retirement, RetirementSettings
from tests.conftest import log_job
from tests.test_partition_liveness import lowered_worker

pytestmark = pytest.mark.integration


async def test_an_api_restarted_on_more_partitions_after_their_removal_is_read(
    redis: Redis, settings: Settings
) -> None:
    # Given a worker on one partition that started while Redis remembered three, and removed
    # partitions 2 and 1 once the API on three had stopped (cleanly: it left the live counts)
    prefix = settings.key_prefix
    three = QueueKeys(prefix, partitions=3)
    await PartitionCount(redis, three).remember()
    removed: list[int] = []
    lowered = lowered_worker(redis, prefix, removed)
    await lowered.run_once()
    assert removed == [2, 1]

    # When the API is started again with three (a restart mid-rollout) and accepts a job that
    # lands in partition 2
    api = await served_keys(redis, three)
    job = next(j for j in iter(log_job, None) if three.partition_of(j.id) == 2)
    await Publisher(redis, api).publish([job])
    await lowered.run_once()

    # Then the worker reads partition 2 again, or its reconciler sees the job as missing and
    # streams it again: either way it is delivered
    worker_keys = QueueKeys(prefix, partitions=1).serving_up_to(3)
    missing = await JobIndex(redis, worker_keys, lowered.reading).missing([job.id])
    assert 2 in lowered.retiring or missing == [job.id]


async def test_redis_restarted_empty_under_an_api_on_more_partitions_keeps_them_read(
    redis: Redis, settings: Settings
) -> None:
    # Given an API on three partitions running and a worker on one reading 1 and 2 as retiring
    prefix = settings.key_prefix
    three = QueueKeys(prefix, partitions=3)
    api = await served_keys(redis, three)
    removed: list[int] = []
    lowered = lowered_worker(redis, prefix, removed)
    await lowered.run_once()
    assert lowered.retiring == [1, 2]

    # When Redis restarts without its data (the remembered count and live counts gone) and the
    # API, still running, says again that it is alive with three
    await redis.delete(three.partition_count(), three.partition_counts())
    await LiveCounts(redis, api).refresh()
    await lowered.run_once()

    # Then the worker still reads partitions 1 and 2, where the API keeps appending
    assert lowered.retiring == [1, 2]


async def test_a_process_whose_clock_runs_behind_keeps_its_partitions(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an API on three partitions on a host whose clock runs 20 s behind the worker's
    prefix = settings.key_prefix
    three = QueueKeys(prefix, partitions=3)
    await PartitionCount(redis, three).remember()
    real = time.time_ns
    with monkeypatch.context() as behind:
        behind.setattr(time, "time_ns", lambda: real() - 20_000_000_000)
        await LiveCounts(redis, three).refresh()
    removed: list[int] = []
    keys = QueueKeys(prefix, partitions=1).serving_up_to(3)
    lowered = Retirement(
        PartitionCount(redis, keys),
        LiveCounts(redis, keys),
        keys,
        ExpiringLock(redis, keys.lock("partitions"), 30_000),
        RetirementSettings(),
        Metrics(),
        removed.append,
    )

    # When the worker on one partition runs a pass right after the API said it is alive
    await lowered.run_once()

    # Then nothing is removed: the API is running
    assert removed == []
