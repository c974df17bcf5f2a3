"""What the dashboard says of workers and breakers, decided from plain data (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pulse.core.breaker import BreakerPolicy
from pulse.http.dashboard_view import breakers, workers
from pulse.queue.heartbeat import WorkerBeat
from pulse.queue.stats import QueueSnapshot
from pulse.store.activity import Delivering, ProviderCall

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failures=3, cooldown_s=30)


def call(provider: str, outcome: str, seconds_ago: float, error: str | None = None) -> ProviderCall:
    at = NOW - timedelta(seconds=seconds_ago)
    return ProviderCall(provider=provider, outcome=outcome, error_class=None, error=error, at=at)


NOW_MS = int(NOW.timestamp() * 1000)


def beat(name: str, silent_ms: int, in_flight: int = 0) -> WorkerBeat:
    return WorkerBeat(
        name=name,
        host=f"{name}.internal",
        pid=7,
        started_at_ms=NOW_MS - 3_600_000,
        seen_at_ms=NOW_MS - silent_ms,
        channels=["email"],
        in_flight=in_flight,
        settling=0,
    )


def snapshot(live: list[WorkerBeat], silent: list[WorkerBeat]) -> QueueSnapshot:
    return QueueSnapshot(
        taken_at_ms=NOW_MS, streams=[], dead_letters=0, workers=live, silent_workers=silent
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
    # Given a live worker with two deliveries in hand and one gone silent 45 s ago
    queue = snapshot([beat("host-b-2", 100, in_flight=2)], [beat("host-a-1", 45_000)])
    delivering = [Delivering(worker="host-b-2", channel="email", count=2)]

    for_tenant = workers(queue, delivering, operator=False)
    for_operator = workers(queue, delivering, operator=True)

    assert [(w.name, w.live, w.delivering) for w in for_tenant] == [
        ("worker 1", False, {}),
        ("worker 2", True, {}),
    ]
    assert all(w.host is None and w.pid is None for w in for_tenant)
    assert [(w.name, w.in_flight, w.delivering) for w in for_operator] == [
        ("host-a-1", 0, {}),
        ("host-b-2", 2, {"email": 2}),
    ]
    assert [(w.host, w.heartbeat_ms, w.channels) for w in for_operator] == [
        ("host-a-1.internal", 45_000, ["email"]),
        ("host-b-2.internal", 100, ["email"]),
    ]
    assert for_operator[0].started_at == NOW - timedelta(hours=1)
