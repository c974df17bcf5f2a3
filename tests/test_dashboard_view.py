"""What the dashboard says of workers and breakers, decided from plain data (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pulse.core.breaker import BreakerPolicy
from pulse.http.dashboard_view import breakers, workers
from pulse.queue.overview import ConsumerState
from pulse.store.activity import Delivering, ProviderCall

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failures=3, cooldown_s=30)


def call(provider: str, outcome: str, seconds_ago: float, error: str | None = None) -> ProviderCall:
    at = NOW - timedelta(seconds=seconds_ago)
    return ProviderCall(provider=provider, outcome=outcome, error_class=None, error=error, at=at)


def consumer(name: str, idle_ms: int, pending: int = 0) -> ConsumerState:
    by_priority = {2: pending} if pending else {}
    return ConsumerState(
        name=name, idle_ms=idle_ms, pending=pending, pending_by_priority=by_priority
    )


def test_a_run_of_temporary_failures_reads_as_open_then_half_open() -> None:
    failing = [call("relay", "retry", s, "SMTP 451: busy") for s in (5, 6, 7)]
    cooled = [call("relay", "retry", s) for s in (40, 41, 42)]
    short = [call("relay", "retry", 1), call("relay", "delivered", 2), call("relay", "retry", 3)]

    [open_] = breakers(["relay"], failing, {}, POLICY, NOW)
    [half] = breakers(["relay"], cooled, {}, POLICY, NOW)
    [closed] = breakers(["relay"], short, {}, POLICY, NOW)

    assert (open_.state, open_.source, open_.streak, open_.last_error) == (
        "open",
        "calls",
        3,
        "SMTP 451: busy",
    )
    assert half.state == "half-open"
    assert (closed.state, closed.streak, closed.failures) == ("closed", 1, 2)


def test_a_workers_own_gauge_wins_and_idle_providers_are_listed() -> None:
    failing = [call("relay", "retry", s) for s in (1, 2, 3)]

    views = breakers(["relay", "spare"], failing, {"relay": 0.0}, POLICY, NOW)

    assert [(v.provider, v.state, v.source, v.calls) for v in views] == [
        ("relay", "closed", "worker", 3),
        ("spare", "closed", "calls", 0),
    ]


def test_workers_are_anonymous_to_a_tenant_and_named_to_an_operator() -> None:
    consumers = [consumer("host-b-2", 100, pending=2), consumer("host-a-1", 45_000)]
    consumers.append(consumer("long-gone", 3_600_000))
    delivering = [Delivering(worker="host-b-2", channel="email", count=2)]

    for_tenant = workers(consumers, delivering, live_ms=30_000, operator=False)
    for_operator = workers(consumers, delivering, live_ms=30_000, operator=True)

    assert [(w.name, w.live, w.delivering) for w in for_tenant] == [
        ("worker 1", False, {}),
        ("worker 2", True, {}),
    ]
    assert [(w.name, w.in_hand, w.delivering) for w in for_operator] == [
        ("host-a-1", 0, {}),
        ("host-b-2", 2, {"email": 2}),
    ]
