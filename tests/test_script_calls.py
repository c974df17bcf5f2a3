"""A batch of script calls goes by EVALSHA alone (no SCRIPT EXISTS before it): each call gets
its own reply or error, and a script Redis does not hold yet (a restart, SCRIPT FLUSH) is loaded
and exactly the calls it refused run, once."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from pulse.queue.keys import QueueKeys
from pulse.queue.scripts import Call, run_calls

pytestmark = pytest.mark.integration

# A source of its own (a random comment) is a script this Redis has never loaded.
COUNTER = "return redis.call('INCRBY', KEYS[1], ARGV[1]) -- {token}"
FAILING = "return redis.error_reply('refused ' .. ARGV[1]) -- {token}"


async def test_unloaded_scripts_are_loaded_and_each_call_runs_once(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given two scripts Redis does not hold, and calls of both interleaved
    counter = redis.register_script(COUNTER.format(token=secrets.token_hex(8)))
    failing = redis.register_script(FAILING.format(token=secrets.token_hex(8)))
    key = f"{keys.prefix}:counter"
    calls = [
        Call(counter, [key], [1]),
        Call(failing, [], ["a"]),
        Call(counter, [key], [10]),
    ]
    # When they run as one batch
    replies = await run_calls(redis, calls)
    # Then each call has its own reply, in order, the error in its place, and each ran once
    assert replies[0] == 1
    assert replies[2] == 11
    assert isinstance(replies[1], ResponseError)
    assert "refused a" in str(replies[1])
    assert int(await redis.get(key) or 0) == 11
    # And the next batch finds them loaded
    assert await run_calls(redis, [Call(counter, [key], [100])]) == [111]
    await redis.delete(key)


async def test_an_empty_batch_sends_nothing(redis: Redis) -> None:
    assert await run_calls(redis, []) == []
