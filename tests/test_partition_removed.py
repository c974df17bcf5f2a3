"""Lowering PULSE_REDIS_PARTITIONS: what a worker that was running while a partition was
removed still believes about it (the reconciler's view of jobs there, a retiring partition's
scheduled sends), found by a review."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from pulse.core.models import Job
from pulse.queue.due import DueIndex
from pulse.queue.index import JobIndex
from pulse.queue.keys import QueueKeys
from pulse.queue.partitions import PartitionCount
from pulse.queue.publisher import Publisher
from tests.conftest import log_job

pytestmark = pytest.mark.integration


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    name = f"rv{secrets.token_hex(4)}"
    yield name
    async for key in redis.scan_iter(match=f"{{{name}*"):
        await redis.delete(key)


def job_in(keys: QueueKeys, partition: int) -> Job:
    """A log job whose id ``keys`` (with its configured count) appends to ``partition``."""
    while True:
        job = log_job()
        if keys.partition_of(job.id) == partition:
            return job


async def test_a_job_an_api_with_the_old_count_appends_to_a_removed_partition_is_missing(
    redis: Redis, prefix: str
) -> None:
    # Given a worker lowered from 3 to 1 partitions that started while Redis remembered 3, and
    # has removed partitions 2 and 1 (both empty)
    worker = QueueKeys(prefix, partitions=1).serving_up_to(3)
    count = PartitionCount(redis, worker)
    await PartitionCount(redis, QueueKeys(prefix, partitions=3)).remember()
    for partition in (2, 1):
        assert await count.drop(worker.part(partition))
        await count.lower(partition)
    # When an API still configured with 3 appends a notification to partition 2, which nobody
    # reads any more (README: "the reconciler streams those notifications again")
    api = QueueKeys(prefix, partitions=3)
    job = job_in(api, 2)
    await Publisher(redis, api).publish([job])

    # Then the worker's reconciler sees it as missing from Redis, so it streams it again
    reading = [0]  # what its retirement says it reads once 2 and 1 are gone
    assert await JobIndex(redis, worker, lambda: reading).missing([job.id]) == [job.id]


async def test_the_reconciler_does_not_copy_a_retiring_partitions_scheduled_job(
    redis: Redis, prefix: str
) -> None:
    # Given a send scheduled by a 3-partition API in partition 2
    api = QueueKeys(prefix, partitions=3)
    job = job_in(api, 2)
    due = datetime.now(UTC) + timedelta(days=30)
    await DueIndex(redis, api).schedule([(job, due)])

    # When a worker lowered to 1 partition (serving 2 as retiring) restores the due-time index
    # from PostgreSQL's scheduled rows, as its reconciler does every pass
    worker = QueueKeys(prefix, partitions=1).serving_up_to(3)
    restored = await DueIndex(redis, worker).restore([(job, due)])

    # Then nothing is restored: Redis holds the job already, in partition 2
    assert restored == []
    assert await redis.zcard(worker.part(0).all_scheduled()[job.priority]) == 0
