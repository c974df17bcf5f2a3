"""A circuit breaker per provider: stop sending to a provider that keeps failing.

Closed: every call goes through; ``failures`` consecutive temporary failures open it. Open:
nothing goes through until ``cooldown_s`` has passed; then it is half-open and admits one probe
at a time. A probe that succeeds closes it; one that fails opens it for another cool-down.
Pure and clock-injected (times are passed in), so it is tested without sleeping. A provider's
permanent refusal of one message (an invalid number) is a *success* here: the provider
answered; only its own trouble (timeouts, 5xx, throttling) counts against it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CircuitState(enum.IntEnum):
    """The gauge values Pulse exports: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and a positive cool-down")


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def state(self, now: float) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if now - self._opened_at >= self._policy.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def admit(self, now: float) -> bool:
        """May a call go out now? In half-open, only one probe is out at a time."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def reopens_in(self, now: float) -> float:
        """Seconds until an open breaker admits a probe (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(self._opened_at + self._policy.cooldown_s - now, 0.0)

    def succeeded(self) -> None:
        self._failures, self._opened_at, self._probing = 0, None, False

    def failed(self, now: float) -> bool:
        """Count a failure; True when this one opened (or re-opened) the circuit."""
        self._failures += 1
        was_probe, self._probing = self._probing, False
        if was_probe or (self._opened_at is None and self._failures >= self._policy.failures):
            self._opened_at = now
            return True
        return False

    def released(self) -> None:
        """A probe ended without telling anything about the provider (the call was cancelled)."""
        self._probing = False
