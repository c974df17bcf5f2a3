"""The pure retry decision: backoff bounds, Retry-After precedence, when to give up."""

from __future__ import annotations

import random

import pytest

from pulse.core.ports import Delivered, Failed, Retry
from pulse.core.retry import Ack, DeadLetter, RetryIn, RetryPolicy, backoff_s, decide

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(base_s=1.0, cap_s=60.0)


@pytest.mark.parametrize("attempt", range(1, 20))
def test_backoff_stays_within_exponential_ceiling_and_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(60.0, 2.0 ** (attempt - 1))
    delays = [backoff_s(attempt, POLICY, rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range


def test_jitter_differs_between_workers_seeded_differently() -> None:
    first = [backoff_s(5, POLICY, random.Random(1)) for _ in range(3)]
    second = [backoff_s(5, POLICY, random.Random(2)) for _ in range(3)]
    assert first != second


def test_delivered_acks_and_permanent_failure_dead_letters() -> None:
    rng = random.Random(0)
    assert decide(Delivered(), 1, 5, POLICY, rng) == Ack()
    decision = decide(Failed(error="550 no such user"), 1, 5, POLICY, rng)
    assert isinstance(decision, DeadLetter)
    assert "550 no such user" in decision.reason


def test_temporary_failure_retries_until_the_last_attempt() -> None:
    rng = random.Random(0)
    assert isinstance(decide(Retry(error="451"), 4, 5, POLICY, rng), RetryIn)
    last = decide(Retry(error="451"), 5, 5, POLICY, rng)
    assert isinstance(last, DeadLetter)
    assert "5 attempts" in last.reason


def test_retry_after_takes_precedence_over_backoff() -> None:
    decision = decide(Retry(error="429", after_s=42.0), 1, 5, POLICY, random.Random(0))
    assert decision == RetryIn(delay_s=42.0)


def test_absurd_retry_after_is_capped() -> None:
    decision = decide(Retry(error="429", after_s=10**9), 1, 5, POLICY, random.Random(0))
    assert decision == RetryIn(delay_s=POLICY.max_retry_after_s)


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(base_s=10, cap_s=1)
