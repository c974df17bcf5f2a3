"""The lines a headless run ends with: HTTP rate, failures and percentiles, then deliveries.

Computed by the locustfile from Locust's own stats, written as JSON beside the CSV and printed.
"""

from __future__ import annotations

from typing import Any

DELIVERY = "DELIVERY"  # the request type of the accept → delivered line in Locust's stats
DELIVERED = "accept → delivered"


def render(summary: dict[str, Any]) -> str:
    http, delivery = summary["http"], summary["delivery"]
    return "\n".join(
        [
            "Pulse load test summary",
            f"  HTTP       {http['requests']} requests, {http['per_s']:.1f} req/s,"
            f" {http['failures']} failures;"
            f" p50 {_ms(http['p50'])}, p95 {_ms(http['p95'])}, p99 {_ms(http['p99'])}",
            f"  delivered  {delivery['delivered']} of {delivery['accepted']} accepted,"
            f" {delivery['per_s']:.1f}/s, {delivery['failed']} failed,"
            f" {delivery['pending']} not finished;"
            f" accept → delivered p50 {_ms(delivery['p50'])}, p95 {_ms(delivery['p95'])},"
            f" p99 {_ms(delivery['p99'])}",
        ]
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
