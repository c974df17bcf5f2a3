"""Retry policy: decided in pure Python, then carried out as exactly one transition.

``decide`` looks at one attempt's outcome and answers what to do with its stream entry:
acknowledge it (delivered), retry it after a delay, or move it to the dead letters. Backoff is
exponential with full jitter and a cap; a provider's Retry-After takes precedence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pulse.core.ports import Delivered, Failed, Outcome, Retry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0
    # A provider asking for longer than this is treated as asking for this.
    max_retry_after_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError("retry policy needs 0 < base_s <= cap_s")


@dataclass(frozen=True, slots=True)
class Ack:
    """Delivered: acknowledge the entry."""


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Leave the entry pending; the reclaimer takes it back after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: move the entry to the dead letters with this reason."""

    reason: str


Decision = Ack | RetryIn | DeadLetter


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]. ``attempt`` counts from 1."""
    ceiling = min(policy.cap_s, policy.base_s * 2.0 ** min(max(attempt - 1, 0), 64))
    return rng.uniform(0.0, ceiling)


def decide(
    outcome: Outcome, attempt: int, max_attempts: int, policy: RetryPolicy, rng: random.Random
) -> Decision:
    if isinstance(outcome, Delivered):
        return Ack()
    if isinstance(outcome, Failed):
        return DeadLetter(reason=f"permanent failure: {outcome.error}")
    return _retry_or_give_up(outcome, attempt, max_attempts, policy, rng)


def _retry_or_give_up(
    outcome: Retry, attempt: int, max_attempts: int, policy: RetryPolicy, rng: random.Random
) -> Decision:
    if attempt >= max_attempts:
        return DeadLetter(reason=f"gave up after {attempt} attempts: {outcome.error}")
    if outcome.after_s is not None:
        return RetryIn(delay_s=min(max(outcome.after_s, 0.0), policy.max_retry_after_s))
    return RetryIn(delay_s=backoff_s(attempt, policy, rng))
