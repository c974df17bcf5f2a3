"""The dashboard's document, assembled from the tenant's activity and the queue's snapshot
(``pulse.queue.stats``, the one reader of the queue's state), and what one tenant may see of
the rest.

A tenant's own data (counts, throughput, latency, failures, dead letters) is always its own.
The queue is shared: an operator tenant sees every worker by name, host and pid, with what it
delivers; any other tenant sees the same numbers without names ("worker 1"), since a worker's
host name and what it has in hand say something of other tenants. Workers are what their
heartbeats say: the live ones, and for a while the ones gone silent (crashed or cut off).
Breakers come from the worker's own gauges when this process runs one (``pulse dev``), else
they are inferred from the recent calls (a run of temporary failures as long as the opening
threshold, within the cooldown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from pulse.core.breaker import BreakerPolicy
from pulse.queue.heartbeat import WorkerBeat
from pulse.queue.stats import QueueSnapshot, StreamState
from pulse.store.activity import Activity, Delivering, Failure, Latency, ProviderCall
from pulse.store.activity import ThroughputPoint as ThroughputPoint

GAUGE_STATES = {0: "closed", 1: "half-open", 2: "open"}


class Viewer(msgspec.Struct, kw_only=True):
    scopes: list[str]
    operator: bool


class WorkerView(msgspec.Struct, kw_only=True):
    """One worker as its last heartbeat describes it."""

    name: str  # its consumer name (operators), else "worker N"
    host: str | None  # operators only
    pid: int | None  # operators only
    started_at: datetime
    channels: list[str]
    heartbeat_ms: int  # since its last heartbeat (Redis's clock against the worker's)
    live: bool  # False: silent for longer than a few missed beats
    in_flight: int  # deliveries in its hands, from read to settled
    settling: int  # finished attempts waiting to be recorded
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
    task_queue: list[StreamState]  # the user tasks' streams
    queue_dead_letters: int | None  # every tenant's: operators only
    workers: list[WorkerView]
    breakers: list[BreakerView]


def workers(
    snapshot: QueueSnapshot, delivering: Sequence[Delivering], *, operator: bool
) -> list[WorkerView]:
    """Live and silent workers by name: anonymous, then named for operators only."""
    live = {beat.name for beat in snapshot.workers}
    beats = sorted([*snapshot.workers, *snapshot.silent_workers], key=lambda beat: beat.name)
    views = [
        _worker(beat, f"worker {number}", snapshot.taken_at_ms, beat.name in live)
        for number, beat in enumerate(beats, start=1)
    ]
    if not operator:
        return views
    doing = _doing(delivering)
    return [
        msgspec.structs.replace(
            view, name=beat.name, host=beat.host, pid=beat.pid, delivering=doing.get(beat.name, {})
        )
        for view, beat in zip(views, beats, strict=True)
    ]


def _worker(beat: WorkerBeat, name: str, now_ms: int, live: bool) -> WorkerView:
    """What any tenant may see of a worker."""
    return WorkerView(
        name=name,
        host=None,
        pid=None,
        started_at=datetime.fromtimestamp(beat.started_at_ms / 1000, UTC),
        channels=beat.channels,
        heartbeat_ms=max(0, now_ms - beat.seen_at_ms),
        live=live,
        in_flight=beat.in_flight,
        settling=beat.settling,
        delivering={},
    )


def _doing(delivering: Sequence[Delivering]) -> dict[str, dict[str, int]]:
    """Notifications each worker is delivering, by channel (from the audit trail)."""
    doing: dict[str, dict[str, int]] = {}
    for row in delivering:
        if row.worker is not None:
            doing.setdefault(row.worker, {})[row.channel] = row.count
    return doing


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
    queue: QueueSnapshot,
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
        queue=queue.streams,
        task_queue=queue.task_streams,
        queue_dead_letters=queue.dead_letters if viewer.operator else None,
        workers=worker_views,
        breakers=breaker_views,
    )
