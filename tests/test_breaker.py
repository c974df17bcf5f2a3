"""The circuit breaker, with the time passed in: no sleeping."""

from __future__ import annotations

import pytest

from pulse.core.breaker import BreakerPolicy, CircuitBreaker, CircuitState

pytestmark = pytest.mark.unit


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=3, cooldown_s=10))

    breaker.failed(0)
    breaker.failed(1)
    breaker.succeeded()  # the count starts over
    opened = [breaker.failed(2), breaker.failed(3), breaker.failed(4)]

    assert opened == [False, False, True]
    assert breaker.state(4) is CircuitState.OPEN
    assert not breaker.admit(5)
    assert breaker.reopens_in(5) == pytest.approx(9)


def test_after_the_cool_down_one_probe_goes_out_and_its_success_closes() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=1, cooldown_s=10))
    breaker.failed(0)

    first, second = breaker.admit(10), breaker.admit(10)
    breaker.succeeded()

    assert (first, second) == (True, False)  # one probe at a time
    assert breaker.state(11) is CircuitState.CLOSED
    assert breaker.admit(11)


def test_a_failed_probe_opens_the_circuit_for_another_cool_down() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=1, cooldown_s=10))
    breaker.failed(0)
    assert breaker.state(10) is CircuitState.HALF_OPEN

    assert breaker.admit(10)
    reopened = breaker.failed(12)

    assert reopened
    assert breaker.state(21) is CircuitState.OPEN
    assert breaker.state(22) is CircuitState.HALF_OPEN


def test_a_cancelled_probe_lets_the_next_one_through() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=1, cooldown_s=1))
    breaker.failed(0)
    assert breaker.admit(2)

    breaker.released()

    assert breaker.admit(2)


def test_late_failures_of_calls_made_before_opening_do_not_extend_the_open_time() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=1, cooldown_s=10))
    breaker.failed(0)

    extended = breaker.failed(5)

    assert not extended
    assert breaker.state(10) is CircuitState.HALF_OPEN


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1.0), (1, 0.0)])
def test_a_policy_that_could_never_work_is_refused(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerPolicy(failures=failures, cooldown_s=cooldown)
