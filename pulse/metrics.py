"""Every Prometheus metric name Pulse exports, defined in one place.

Metrics live in a registry owned by the process's composition root (no import-time globals), so
tests and the all-in-one ``pulse dev`` can hold several without name clashes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.accepted = Counter(
            "pulse_notifications_accepted_total",
            "Notifications accepted by the API (committed and queued).",
            ["channel"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "pulse_notifications_delivered_total",
            "Notifications delivered by a channel.",
            ["channel"],
            registry=self.registry,
        )
        self.failed = Counter(
            "pulse_notifications_failed_total",
            "Notifications that failed permanently.",
            ["channel"],
            registry=self.registry,
        )
        self.retried = Counter(
            "pulse_notifications_retried_total",
            "Delivery attempts that failed temporarily and will be retried.",
            ["channel"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "pulse_delivery_duration_seconds",
            "Time a channel took for one delivery attempt.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provider_attempts = Counter(
            "pulse_provider_attempts_total",
            "Calls to a provider, by channel and outcome (delivered, retry, failed).",
            ["provider", "channel", "outcome"],
            registry=self.registry,
        )
        self.circuit_state = Gauge(
            "pulse_provider_circuit_state",
            "Circuit breaker of a provider in this worker: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=self.registry,
        )
        self.circuit_opened = Counter(
            "pulse_provider_circuit_opened_total",
            "Times a provider's circuit breaker opened.",
            ["provider"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "pulse_notifications_fallback_total",
            "Notifications moved to the next channel of their fallback chain.",
            ["from_channel", "to_channel"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "pulse_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
