"""Providers' rates: a token bucket per provider account in Redis (throttle.lua), shared by every
worker; work over the rate is put off, never failed, and uses no attempt."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.limits import Rate
from pulse.devtools.smtp_sink import ReceivedMail, SmtpSink
from pulse.queue.buckets import ProviderBuckets
from pulse.queue.keys import QueueKeys
from tests.conftest import Client, WorkerFactory

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000.0


async def test_a_bucket_gives_its_burst_then_one_token_per_interval(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a provider allowed 10 a second with a burst of 3
    buckets, rate, name = ProviderBuckets(redis, keys), Rate(10, 3), secrets.token_hex(4)
    # When 6 calls ask at one instant
    waits = [await buckets.take(name, rate, T0) for _ in range(6)]
    # Then 3 go, and the 3 put off are told to come back one interval apart
    assert waits == [0, 0, 0, 100, 200, 300]
    # And a token comes back each interval, taken by whoever asks first
    assert await buckets.take(name, rate, T0 + 100) == 0
    assert await buckets.take(name, rate, T0 + 150) > 0
    assert await buckets.take(name, rate, T0 + 200) == 0


async def test_return_times_spread_out_and_catch_up_with_now(redis: Redis, keys: QueueKeys) -> None:
    # Given an empty bucket of 2 a second
    buckets, rate, name = ProviderBuckets(redis, keys), Rate(2, 1), secrets.token_hex(4)
    assert await buckets.take(name, rate, T0) == 0
    # When calls are refused, each is given a later slot
    assert [await buckets.take(name, rate, T0) for _ in range(3)] == [500, 1000, 1500]
    # And long after every promised slot has passed, the bucket is full and the queue forgotten
    assert await buckets.take(name, rate, T0 + 10_000) == 0


@pytest.fixture
def stamped_sink() -> Iterator[tuple[SmtpSink, list[float]]]:
    """An SMTP sink of this test's own that notes when each mail arrived."""
    arrivals: list[float] = []
    lock = threading.Lock()

    def note(mail: ReceivedMail) -> None:
        with lock:
            arrivals.append(time.monotonic())

    with SmtpSink(on_message=note) as sink:
        yield sink, arrivals


async def test_workers_share_a_providers_rate_and_nothing_fails(
    settings: Settings, client: Client, auth: dict[str, str], start_worker: WorkerFactory,
    stamped_sink: tuple[SmtpSink, list[float]],
) -> None:  # fmt: skip
    # Given two workers delivering mail through one relay allowed 4 a second with a burst of 2
    sink, arrivals = stamped_sink
    rate, burst = 4.0, 2
    limited = msgspec.structs.replace(
        settings, smtp_port=sink.port, rate_limit_providers=f"smtp={rate:g}/{burst}"
    )
    workers = [start_worker(limited), start_worker(limited)]
    # When 14 mails are sent at once, each allowed a single attempt
    mail = {"channel": "email", "payload": {"subject": "s", "body": "b"}, "max_attempts": 1}
    ids = []
    for i in range(14):
        body = mail | {"recipient": f"r{i}@example.com"}
        response = await client.post("/api/notifications/", json=body, headers=auth)
        ids.append((await response.json())["id"])
    documents = [await finished(client, auth, notification) for notification in ids]
    # Then every one is delivered, none failed, each with its one attempt
    assert [d["status"] for d in documents] == ["delivered"] * 14
    assert all(d["attempts"] == 1 for d in documents)
    # And the relay never saw more than its rate: in any span of a second or more (the rate is
    # per second), at most burst + rate x span (+1: a mail's arrival lags its token by a
    # connection's time, which varies; on a loaded machine mails given tokens a quarter of a
    # second apart can arrive within the same few milliseconds, so shorter spans say nothing)
    times = sorted(arrivals)
    assert len(times) == 14
    # the last token comes (14 - burst) / rate = 3 s after the first; the first mail may arrive
    # up to a second after its token
    assert times[-1] - times[0] >= (len(times) - burst) / rate - 1.0
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            if times[j] - times[i] >= 1.0:
                assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1, (i, j, times)
    # And the history of the ones put off says what they waited for, and metrics count them
    waited = [h for d in documents for h in d["history"] if "rate limit" in (h.get("detail") or "")]
    assert waited
    assert "provider smtp's rate limit (4/s, burst 2)" in waited[0]["detail"]
    deferred = sum(
        w.worker.metrics.registry.get_sample_value(
            "pulse_deliveries_deferred_total", {"limit": "provider", "provider": "smtp"}
        ) or 0
        for w in workers
    )  # fmt: skip
    assert deferred >= 14 - burst


async def finished(client: Client, auth: dict[str, str], notification: str) -> dict[str, Any]:
    for _ in range(1200):
        response = await client.get(f"/api/notifications/{notification}", headers=auth)
        document: dict[str, Any] = await response.json()
        if document["status"] in ("delivered", "failed"):
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"{notification} never finished")
