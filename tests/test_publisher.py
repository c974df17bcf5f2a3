"""The publisher's shared round trips: the publishes of one event-loop tick go to Redis as one
pipeline, yet each caller gets exactly its own entry ids, and an append Redis refuses fails only
the publish it belongs to."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from tests.conftest import log_job

pytestmark = pytest.mark.integration


async def test_concurrent_publishes_each_get_their_own_entries(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given 50 requests publishing at once, one job each, and one publishing three
    publisher = Publisher(redis, keys)
    singles = [[log_job(2)] for _ in range(50)]
    triple = [log_job(1), log_job(2), log_job(3)]
    # When they publish in the same tick
    answers = await asyncio.gather(*(publisher.publish(jobs) for jobs in [*singles, triple]))
    # Then each got one entry id per job, and the index finds each job at its own entry
    for jobs, ids in zip([*singles, triple], answers, strict=True):
        assert len(ids) == len(jobs)
        for job, entry_id in zip(jobs, ids, strict=True):
            where = await redis.hget(keys.index(), job.id)
            assert where == f"{keys.stream(job.priority)} ".encode() + entry_id
    assert await redis.xlen(keys.stream(2)) == 51
    assert [await redis.xlen(keys.stream(p)) for p in (1, 3)] == [1, 1]


async def test_an_append_redis_refuses_fails_only_its_own_publish(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given the stream of priority 4 broken (a plain string where a stream should be)
    await redis.set(keys.stream(4), "not a stream")
    publisher = Publisher(redis, keys)
    # When a publish to it and others publish in the same tick
    outcomes = await asyncio.gather(
        publisher.publish([log_job(2)]),
        publisher.publish([log_job(4)]),
        publisher.publish([log_job(2)]),
        return_exceptions=True,
    )
    # Then only the publish to the broken stream fails
    assert [isinstance(outcome, Exception) for outcome in outcomes] == [False, True, False]
    assert "WRONGTYPE" in str(outcomes[1])
    assert await redis.xlen(keys.stream(2)) == 2


async def test_publishing_nothing_answers_nothing(redis: Redis, keys: QueueKeys) -> None:
    assert await Publisher(redis, keys).publish([]) == []
