"""The dashboard's document, assembled from the tenant's activity and the queue's state, and
what one tenant may see of the rest.

A tenant's own data (counts, throughput, latency, failures, dead letters) is always its own.
The queue is shared: an operator tenant sees every worker by name with what it delivers; any
other tenant sees the same numbers without names ("worker 1"), since a worker's host name and
what it has in hand say something of other tenants. Breakers come from the worker's own gauges
when this process runs one (``pulse dev``), else they are inferred from the recent calls
(a run of temporary failures as long as the opening threshold, within the cooldown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from pulse.core.breaker import BreakerPolicy
from pulse.queue.overview import ConsumerState, QueueOverview, StreamState
from pulse.store.activity import Activity, Delivering, Failure, Latency, ProviderCall
from pulse.store.activity import ThroughputPoint as ThroughputPoint

GAUGE_STATES = {0: "closed", 1: "half-open", 2: "open"}
GONE_AFTER_MS = 600_000  # consumers silent for longer are workers that left: not listed


class Viewer(msgspec.Struct, kw_only=True):
    scopes: list[str]
    operator: bool


class WorkerView(msgspec.Struct, kw_only=True):
    name: str
    heartbeat_ms: int  # how long since it last spoke to Redis
    live: bool
    in_hand: int
    in_hand_by_priority: dict[int, int]
    delivering: dict[str, int]  # channel -> notifications (operator only)


class BreakerView(msgspec.Struct, kw_only=True):
    provider: str
    state: str  # closed, half-open or open
    source: str  # "worker": this process's breaker; "calls": inferred from recent attempts
    calls: int
    failures: int
    streak: int  # temporary failures in a row, newest first
    last_error: str | None
    last_at: datetime | None


class Dashboard(msgspec.Struct, kw_only=True):
    at: datetime
    window_s: int
    bucket_s: int
    viewer: Viewer
    statuses: dict[str, int]
    throughput: list[ThroughputPoint]
    latency: list[Latency]
    failures: list[Failure]
    dead_letters: int
    queue: list[StreamState]
    queue_dead_letters: int | None  # every tenant's: operators only
    workers: list[WorkerView]
    breakers: list[BreakerView]


def workers(
    consumers: Sequence[ConsumerState],
    delivering: Sequence[Delivering],
    *,
    live_ms: int,
    operator: bool,
) -> list[WorkerView]:
    """Consumers heard from lately, freshest first; named for operators only."""
    recent = sorted((c for c in consumers if c.idle_ms < GONE_AFTER_MS), key=lambda c: c.name)
    doing: dict[str, dict[str, int]] = {}
    for row in delivering:
        if row.worker is not None:
            doing.setdefault(row.worker, {})[row.channel] = row.count
    return [
        WorkerView(
            name=c.name if operator else f"worker {number}",
            heartbeat_ms=c.idle_ms,
            live=c.idle_ms < live_ms,
            in_hand=c.pending,
            in_hand_by_priority=c.pending_by_priority,
            delivering=doing.get(c.name, {}) if operator else {},
        )
        for number, c in enumerate(recent, start=1)
    ]


def breakers(
    providers: Iterable[str],
    calls: Sequence[ProviderCall],
    gauges: Mapping[str, float],
    policy: BreakerPolicy,
    now: datetime,
) -> list[BreakerView]:
    """One line per provider: its state, and its recent calls (newest first in ``calls``)."""
    by_provider: dict[str, list[ProviderCall]] = {name: [] for name in providers}
    for call in calls:
        by_provider.setdefault(call.provider, []).append(call)
    return [
        _breaker(name, by_provider[name], gauges.get(name), policy, now)
        for name in sorted(by_provider)
    ]


def _breaker(
    name: str,
    calls: list[ProviderCall],
    gauge: float | None,
    policy: BreakerPolicy,
    now: datetime,
) -> BreakerView:
    streak = _streak(calls)
    last_failure = next((c for c in calls if c.outcome != "delivered"), None)
    if gauge is not None:
        state, source = GAUGE_STATES.get(int(gauge), "closed"), "worker"
    else:
        state, source = _inferred(streak, calls, policy, now), "calls"
    return BreakerView(
        provider=name,
        state=state,
        source=source,
        calls=len(calls),
        failures=sum(1 for c in calls if c.outcome != "delivered"),
        streak=streak,
        last_error=last_failure.error if last_failure else None,
        last_at=calls[0].at if calls else None,
    )


def _streak(calls: Sequence[ProviderCall]) -> int:
    count = 0
    for call in calls:
        if call.outcome != "retry":
            break
        count += 1
    return count


def _inferred(
    streak: int, calls: Sequence[ProviderCall], policy: BreakerPolicy, now: datetime
) -> str:
    if streak < policy.failures:
        return "closed"
    since_s = (now - calls[0].at).total_seconds()
    return "open" if since_s < policy.cooldown_s else "half-open"


def assemble(
    activity: Activity,
    overview: QueueOverview,
    viewer: Viewer,
    worker_views: list[WorkerView],
    breaker_views: list[BreakerView],
    *,
    window_s: int,
    bucket_s: int,
) -> Dashboard:
    return Dashboard(
        at=datetime.now(UTC),
        window_s=window_s,
        bucket_s=bucket_s,
        viewer=viewer,
        statuses=activity.statuses,
        throughput=activity.throughput,
        latency=activity.latency,
        failures=activity.failures,
        dead_letters=activity.dead_letters,
        queue=overview.streams,
        queue_dead_letters=overview.dead_letters if viewer.operator else None,
        workers=worker_views,
        breakers=breaker_views,
    )
