"""The GCRA limiter (gcra.lua) against real Redis, driven by a clock of the test's own: the
exact arithmetic a user relies on, with no timing involved."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis

from pulse.core.limits import Rate
from pulse.queue.keys import QueueKeys
from pulse.queue.limiter import Limit, RateLimiter

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000.0  # a fixed "now" (ms)


def limiter(redis: Redis, keys: QueueKeys) -> RateLimiter:
    return RateLimiter(redis, keys)


def tenant_limit(per_s: float, burst: int) -> Limit:
    return Limit("tenant", secrets.token_hex(4), Rate(per_s, burst))


async def test_a_burst_is_admitted_at_once_then_one_unit_per_interval(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a limit of 10 a second with a burst of 5
    limits = [tenant_limit(10, 5)]
    gcra = limiter(redis, keys)
    # When 8 requests arrive at the same instant
    answers = [await gcra.admit(limits, 1, T0) for _ in range(8)]
    # Then the burst of 5 is admitted, counting down, and the rest refused for one interval
    assert [a.admitted for a in answers] == [True] * 5 + [False] * 3
    assert [a.states[0].remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert {a.retry_after_ms for a in answers[5:]} == {100}
    assert answers[4].states[0].reset_ms == 500  # empty: 5 units of 100 ms to refill
    # And after each interval exactly one more is admitted
    for step in range(1, 4):
        now = T0 + 100 * step
        assert (await gcra.admit(limits, 1, now)).admitted
        assert not (await gcra.admit(limits, 1, now)).admitted


async def test_accepted_per_second_is_the_rate_for_many_interleaved_clients(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a limit of 20 a second (burst 20) and 8 clients each asking every 5 ms
    limits = [tenant_limit(20, 20)]
    gcra = limiter(redis, keys)
    per_second: dict[int, int] = {}
    # When they ask for 10 simulated seconds
    for tick in range(0, 10_000, 5):
        for _ in range(8):
            if (await gcra.admit(limits, 1, T0 + tick)).admitted:
                per_second[tick // 1000] = per_second.get(tick // 1000, 0) + 1
    # Then the first second admits the burst plus a second's refill, every later one the rate
    assert per_second[0] == 20 + 19  # the burst at once, then one each 50 ms after it
    assert all(abs(per_second[s] - 20) <= 1 for s in range(1, 10)), per_second
    assert sum(per_second.values()) == 20 + 20 * 10 - 1


async def test_a_batch_takes_its_items_all_or_nothing(redis: Redis, keys: QueueKeys) -> None:
    # Given a limit with a burst of 10, 7 of which are taken
    limits = [tenant_limit(10, 10)]
    gcra = limiter(redis, keys)
    assert (await gcra.admit(limits, 7, T0)).admitted
    # When a batch of 4 asks: refused, and nothing is taken
    refused = await gcra.admit(limits, 4, T0)
    assert not refused.admitted
    assert refused.retry_after_ms == 100
    assert refused.states[0].remaining == 3
    # Then a batch of 3 still fits
    assert (await gcra.admit(limits, 3, T0)).admitted


async def test_every_limit_must_admit_and_a_refusal_costs_none_of_them(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a generous tenant limit and a tight key limit
    tenant, key = tenant_limit(100, 100), Limit("key", "k1", Rate(1, 2))
    gcra = limiter(redis, keys)
    assert (await gcra.admit([tenant, key], 2, T0)).admitted
    # When the key's limit refuses
    refused = await gcra.admit([tenant, key], 1, T0)
    # Then the tenant's allowance is untouched, and the wait is the key's
    assert not refused.admitted
    assert refused.retry_after_ms == 1000
    assert [s.remaining for s in refused.states] == [98, 0]
    # And another key of the same tenant is not held back
    other = Limit("key", "k2", Rate(1, 2))
    assert (await gcra.admit([tenant, other], 1, T0)).admitted


async def test_state_expires_once_whole_again(redis: Redis, keys: QueueKeys) -> None:
    # Given a limit used once
    limit = tenant_limit(1, 2)
    await limiter(redis, keys).admit([limit], 1, T0)
    # Then its key lives no longer than the time to refill (one unit: 1 s): no leftover state
    ttl = await redis.pttl(limiter(redis, keys).key(limit))
    assert 900 < ttl <= 1000


async def test_a_changed_limit_is_in_force_at_once_not_after_the_old_ones_lock_out(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a tenant that used up a slow limit (5 at once, then one per 100 s)
    gcra = limiter(redis, keys)
    slow = tenant_limit(0.01, 5)
    assert [(await gcra.admit([slow], 1, T0)).admitted for _ in range(6)] == [True] * 5 + [False]
    # When the operator raises it to 1000 a second with a burst of 1000
    fast = Limit("tenant", slow.ident, Rate(1000, 1000))
    answer = await gcra.admit([fast], 1, T0 + 1)
    # Then the next request is admitted under the new limit, which reports its own state
    assert answer.admitted
    assert answer.states[0].remaining == 999
    # And a state stored under any limit never holds a request back longer than that limit's
    # own whole burst takes to refill
    await redis.set(gcra.key(slow), str(T0 + 10**12))
    assert (await gcra.admit([slow], 1, T0)).retry_after_ms <= 500_000 + 100_000


async def test_the_slowest_allowed_rate_with_the_largest_burst_is_served(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given the slowest rate a limit may have (one a day) and the largest burst
    gcra = limiter(redis, keys)
    limit = tenant_limit(1 / 86_400, 10_000_000)
    # When it is used up at once (its state then lasts 10 million days)
    admitted = await gcra.admit([limit], 10_000_000, T0)
    # Then it is answered (no Redis error), and the next unit waits one day
    assert admitted.admitted
    assert admitted.states[0].remaining == 0
    refused = await gcra.admit([limit], 1, T0)
    assert not refused.admitted
    assert refused.retry_after_ms == 86_400_000
