"""The load test's own parts, without Locust or a server: the mix Pulse must accept, the book
of ids waiting for delivery, the summary it prints, the run time it is given."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from loadtest import mix
from loadtest.delivery import CLOCK_MARGIN, DeliveryBook
from loadtest.run import seconds
from loadtest.summary import render
from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.ports import ChannelSpec
from pulse.http.validation import check_item, decode_request

pytestmark = pytest.mark.unit

RECEIVER = "http://127.0.0.1:9999/hooks/pulse"
TAG = {"loadtest": "abc"}
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def specs_of_a_dev_pulse_with_a_loopback_receiver() -> dict[str, ChannelSpec]:
    """As `make loadtest` runs it: webhooks to loopback allowed, signed (pulse dev keeps a key)."""
    settings = Settings(
        webhook_allow_http=True, webhook_allow_private=True, receipt_signing_key="k" * 32
    )
    return channel_specs(settings)


def test_every_notification_of_the_mix_is_one_pulse_accepts() -> None:
    # Given the channels of a pulse dev that may post to the load test's receiver
    specs = specs_of_a_dev_pulse_with_a_loopback_receiver()
    rng = random.Random(7)
    # When the mix makes many single sends and batches
    singles = [mix.single(rng, RECEIVER, TAG) for _ in range(300)]
    batches = [mix.batch(rng, RECEIVER, TAG) for _ in range(30)]
    # Then Pulse's own validation accepts each of them (a 422 would be a failure, not load)
    for body in singles:
        decode_request(msgspec.json.encode(body), specs)
    for body in batches:
        for recipient in body["recipients"]:
            check_item(body["template"] | {"recipient": recipient}, specs)
    # And the mix spans every channel and priority, tagged so its sends can be found again
    assert {body["channel"] for body in singles} == {"email", "log", "webhook"}
    assert {body["priority"] for body in singles} == {0, 1, 2, 3, 4}
    assert all(body["metadata"] == TAG for body in singles)


def test_without_a_receiver_no_webhook_is_sent() -> None:
    rng = random.Random(1)
    channels = {mix.single(rng, None, TAG)["channel"] for _ in range(300)}
    channels |= {mix.batch(rng, None, TAG)["template"]["channel"] for _ in range(50)}
    assert channels == {"email", "log"}


def document(
    notification_id: str, status: str, delivered_after_ms: int | None
) -> dict[str, object]:
    delivered = (
        None if delivered_after_ms is None else T0 + timedelta(milliseconds=delivered_after_ms)
    )
    return {
        "id": notification_id,
        "status": status,
        "created_at": T0.isoformat(),
        "updated_at": (delivered or T0).isoformat(),
        "delivered_at": delivered.isoformat() if delivered and status == "delivered" else None,
        "failed_at": delivered.isoformat() if delivered and status == "failed" else None,
        "last_error": "550 no such user" if status == "failed" else None,
    }


def test_the_book_settles_finished_notifications_with_pulses_own_latency() -> None:
    # Given three notifications sent with one key and one with another
    book = DeliveryBook()
    book.sent("key-a", ["n1", "n2", "n3"], T0)
    book.sent("key-b", ["n4"], T0 + timedelta(seconds=1))
    assert (book.pending(), book.accepted, book.keys_waiting()) == (4, 4, ["key-a", "key-b"])
    assert book.since("key-a") == T0 - CLOCK_MARGIN
    # When a list answers one delivered, one failed, one still queued, and one it never sent
    settled = book.settle(
        "key-a",
        [
            document("n1", "delivered", 250),
            document("n2", "failed", 1500),
            document("n3", "queued", None),
            document("other", "delivered", 10),
        ],
    )
    # Then the finished ones are settled with delivered_at - created_at, and forgotten
    assert [(s.id, s.status, s.latency_ms, s.error) for s in settled] == [
        ("n1", "delivered", 250.0, None),
        ("n2", "failed", 1500.0, "550 no such user"),
    ]
    assert (book.pending(), book.accepted) == (2, 4)
    # And a second answer with the same ids settles nothing twice
    assert book.settle("key-a", [document("n1", "delivered", 250)]) == []
    book.settle("key-b", [document("n4", "delivered", 5)])
    assert book.keys_waiting() == ["key-a"]
    assert book.since("key-b") is None


def test_the_summary_names_rate_failures_percentiles_and_deliveries() -> None:
    summary = {
        "http": {"requests": 1200, "per_s": 40.0, "failures": 0, "p50": 6, "p95": 17, "p99": 41},
        "delivery": {
            "requests": 1500, "per_s": 50.0, "p50": 36, "p95": 110, "p99": 180,
            "delivered": 1499, "failed": 1, "accepted": 1500, "pending": 0,
        },
    }  # fmt: skip
    text = render(summary)
    assert "1200 requests, 40.0 req/s, 0 failures; p50 6 ms, p95 17 ms, p99 41 ms" in text
    assert "delivered  1499 of 1500 accepted, 50.0/s, 1 failed, 0 not finished" in text
    assert "accept → delivered p50 36 ms, p95 110 ms, p99 180 ms" in text


def test_the_summary_of_a_run_that_delivered_nothing_says_so() -> None:
    nothing = {"requests": 0, "per_s": 0.0, "p50": None, "p95": None, "p99": None}
    summary = {
        "http": nothing | {"failures": 0},
        "delivery": nothing | {"delivered": 0, "failed": 0, "accepted": 0, "pending": 0},
    }
    assert "accept → delivered p50 n/a, p95 n/a, p99 n/a" in render(summary)


@pytest.mark.parametrize(
    ("timespan", "expected"), [("90", 90), ("90s", 90), ("1m30s", 90), ("2m", 120), ("1h", 3600)]
)
def test_run_times_in_locusts_notation(timespan: str, expected: int) -> None:
    assert seconds(timespan) == expected


@pytest.mark.parametrize("timespan", ["", "soon", "1d", "-5s"])
def test_a_run_time_locust_cannot_read_is_refused(timespan: str) -> None:
    with pytest.raises(ValueError, match="LOADTEST_RUN_TIME"):
        seconds(timespan)
