"""Every Prometheus metric name Pulse exports, defined in one place.

Metrics live in a registry owned by the process's composition root (no import-time globals), so
tests and the all-in-one ``pulse dev`` can hold several without name clashes. Each process
exposes its own flow metrics (the API on ``/metrics``, a worker on ``PULSE_WORKER_METRICS_PORT``);
the queue's state is collected only by the API process (``collect_queue_state``), from Redis at
scrape time, so its gauges come from one place and summing over processes is never wrong.

Labels are bounded by configuration: channel, priority (0-4), provider, route, status. Never a
tenant, a recipient or an id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pulse.queue.stats import QueueSnapshot, StreamState

M = TypeVar("M", Counter, Histogram)  # a metric with labels
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From accept to delivery: milliseconds when idle, hours behind a backlog or a long retry.
END_TO_END_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
)  # fmt: skip
FLOW = ["channel", "priority"]
# The `_created` series only double the series count (prometheus_client leaves this untyped).
_disable_created: Callable[[], None] = disable_created_metrics


class LabelledOnce(Generic[M]):
    """A metric's labelled children, each looked up once: on the delivery path ``labels()``
    (a lock and a tuple key) costs more than the count or observation itself."""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _disable_created()
        self.registry = registry or CollectorRegistry()
        self.queue: QueueCollector | None = None
        self._flow()
        self._latency()
        self._providers()
        self._limits()
        self._retention()
        self._partitions()
        self.http_seconds = Histogram(
            "pulse_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_seconds_of = LabelledOnce(self.http_seconds)  # (method, route, status)

    def _counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def _flow(self) -> None:
        """What happens to notifications, by channel and priority."""
        self.accepted = self._counter(
            "pulse_notifications_accepted_total",
            "Notifications accepted by the API (committed), single and batch items alike.",
            FLOW,
        )
        self._accepted = LabelledOnce(self.accepted)  # once per request on the accept path
        self.delivered = self._counter(
            "pulse_notifications_delivered_total", "Notifications delivered.", FLOW
        )
        self.failed = self._counter(
            "pulse_notifications_failed_total",
            "Notifications that failed for good (status failed).",
            FLOW,
        )
        self.retried = self._counter(
            "pulse_notifications_retried_total",
            "Attempts that failed temporarily and will be retried.",
            FLOW,
        )
        self.dead_lettered = self._counter(
            "pulse_notifications_dead_lettered_total",
            "Entries moved to the dead letters (channel 'undecodable': an unreadable entry).",
            FLOW,
        )
        self.replayed = self._counter(
            "pulse_notifications_replayed_total", "Dead letters replayed.", FLOW
        )
        self.cancelled = self._counter(
            "pulse_notifications_cancelled_total", "Notifications cancelled.", FLOW
        )
        self.fallbacks = self._counter(
            "pulse_notifications_fallback_total",
            "Notifications moved to the next channel of their fallback chain.",
            ["from_channel", "to_channel"],
        )

    def _latency(self) -> None:
        self.waited = Histogram(
            "pulse_notification_wait_seconds",
            "From accepted to its first attempt started.",
            FLOW,
            buckets=END_TO_END_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end = Histogram(
            "pulse_notification_end_to_end_seconds",
            "From accepted to delivered.",
            FLOW,
            buckets=END_TO_END_BUCKETS,
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "pulse_delivery_duration_seconds",
            "Time a channel took for one delivery attempt (every provider it tried).",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.schedule_lateness = Histogram(
            "pulse_schedule_lateness_seconds",
            "How late the scheduler streamed a scheduled notification after its due time.",
            buckets=(*LATENCY_BUCKETS, 10.0, 60.0, 300.0),
            registry=self.registry,
        )

    def _providers(self) -> None:
        self.provider_seconds = Histogram(
            "pulse_provider_call_duration_seconds",
            "Time one call to a provider took, whatever its outcome.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provider_attempts = self._counter(
            "pulse_provider_attempts_total",
            "Calls to a provider, by channel and outcome (delivered, retry, failed).",
            ["provider", "channel", "outcome"],
        )
        self.circuit_state = Gauge(
            "pulse_provider_circuit_state",
            "Circuit breaker of a provider in this worker: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=self.registry,
        )
        self.circuit_opened = self._counter(
            "pulse_provider_circuit_opened_total",
            "Times a provider's circuit breaker opened.",
            ["provider"],
        )

    def _limits(self) -> None:
        """Every limit decision, by the limit that made it (never by tenant)."""
        self.rate_limited = self._counter(
            "pulse_rate_limited_total",
            "Requests refused (429) by an ingress limit: tenant or key.",
            ["limit"],
        )
        self.limiter_unavailable = self._counter(
            "pulse_rate_limiter_unavailable_total",
            "Requests let through unlimited because Redis could not be asked (fail-open).",
            [],
        )
        self.deferred = self._counter(
            "pulse_deliveries_deferred_total",
            "Attempts put off, not made, by a limit (provider: a provider's rate; recipient: a"
            " recipient's cap, provider '-').",
            ["limit", "provider"],
        )
        self.skipped = self._counter(
            "pulse_notifications_skipped_total",
            "Notifications ended skipped by a limit (recipient: a recipient's cap).",
            ["limit", "channel"],
        )

    def _retention(self) -> None:
        """What the retention pass removed (pulse/runtime/retention.py)."""
        self.partitions_dropped = Counter(
            "pulse_retention_partitions_dropped_total",
            "Weekly notification partitions dropped (with their audit, attempts and results).",
            registry=self.registry,
        )
        self.rows_removed = self._counter(
            "pulse_retention_rows_removed_total",
            "Notifications removed past the retention: with a dropped partition (how=dropped,"
            " PostgreSQL's estimate of its rows) or by batched DELETE (how=deleted, exact).",
            ["how"],
        )

    def _partitions(self) -> None:
        """Redis partitions above the configured count (pulse/runtime/retirement.py)."""
        self.partitions_retiring = Gauge(
            "pulse_queue_partitions_retiring",
            "Redis queue partitions this worker still reads but no longer appends to (above"
            " PULSE_REDIS_PARTITIONS, below the count Redis remembers).",
            registry=self.registry,
        )
        self.partitions_removed = Counter(
            "pulse_queue_partitions_removed_total",
            "Retiring Redis queue partitions found empty and removed by this worker.",
            registry=self.registry,
        )

    def count_accepted(self, items: Iterable[tuple[str, int]]) -> None:
        """Count accepted notifications, given as (channel, priority)."""
        for channel, priority in items:
            self._accepted(channel, str(priority)).inc()

    def count_cancelled(self, channel: str, priority: int) -> None:
        self.cancelled.labels(channel, str(priority)).inc()

    def collect_queue_state(self) -> QueueCollector:
        """Export the queue's state from this process (the API's: one process only)."""
        if self.queue is None:
            self.queue = QueueCollector()
            self.registry.register(self.queue)
        return self.queue

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# The queue gauges: (name, help, value of a stream's state).
STREAM_GAUGES = (
    ("pulse_queue_depth", "Entries not yet delivered (unread or pending).", "depth"),
    ("pulse_queue_lag", "Entries the workers have not read yet.", "lag"),
    ("pulse_queue_pending", "Entries read but not acknowledged (in hand or retrying).", "pending"),
    (
        "pulse_queue_oldest_age_seconds",
        "Age of the oldest entry not yet done (0 when the stream is empty).",
        "oldest_age_s",
    ),
    (
        "pulse_queue_oldest_pending_age_seconds",
        "Age of the oldest pending entry (0 when none is pending).",
        "oldest_pending_age_s",
    ),
    ("pulse_queue_retry_scheduled", "Pending entries waiting for a retry.", "retry_waiting"),
    ("pulse_queue_consumers", "Consumers the group knows (dead ones stay listed).", "consumers"),
)


class QueueCollector(Collector):
    """The queue's state from the last snapshot read at this scrape (``show``); none when Redis
    could not be read, rather than stale numbers."""

    def __init__(self) -> None:
        self._snapshot: QueueSnapshot | None = None

    def show(self, snapshot: QueueSnapshot | None) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._snapshot
        yield GaugeMetricFamily(
            "pulse_queue_stats_up",
            "1 when the queue's state could be read from Redis at this scrape.",
            value=0 if snapshot is None else 1,
        )
        if snapshot is None:
            return
        for prefix, streams in (("pulse_queue", snapshot.streams),
                                ("pulse_task_queue", snapshot.task_streams)):  # fmt: skip
            for name, doc, field in STREAM_GAUGES:
                name = name.replace("pulse_queue", prefix)
                family = GaugeMetricFamily(name, doc, labels=["priority"])
                for stream in streams:
                    family.add_metric([str(stream.priority)], getattr(stream, field) or 0)
                yield family
            yield _next_retry(streams, prefix)
        yield GaugeMetricFamily(
            "pulse_dead_letters", "Entries in the dead-letter stream.", value=snapshot.dead_letters
        )
        yield GaugeMetricFamily(
            "pulse_workers_live", "Workers with a recent heartbeat.", value=len(snapshot.workers)
        )
        yield _in_flight(snapshot)


def _next_retry(streams: list[StreamState], prefix: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        f"{prefix}_retry_next_due_seconds",
        "Seconds until the next scheduled retry is due (negative: overdue); absent when none.",
        labels=["priority"],
    )
    for stream in streams:
        if stream.next_retry_in_s is not None:
            family.add_metric([str(stream.priority)], stream.next_retry_in_s)
    return family


def _in_flight(snapshot: QueueSnapshot) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "pulse_workers_in_flight",
        "Deliveries in the hands of live workers, as their last heartbeats said.",
        value=sum(worker.in_flight for worker in snapshot.workers),
    )
