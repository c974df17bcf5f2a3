"""Failover down a route, with in-process providers and a hand-driven clock (no I/O)."""

from __future__ import annotations

import pytest

from pulse.channels.log import LOG_SPEC, LogPayload
from pulse.core.breaker import BreakerPolicy
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.core.ports import Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.timeutil import utcnow
from pulse.metrics import Metrics
from pulse.runtime.failover import Breakers, Failover
from pulse.runtime.work import CIRCUIT_OPEN, Delivery, Done, Try, final_outcome

pytestmark = pytest.mark.unit


class Scripted:
    """A provider that answers what it is told, and counts its calls."""

    spec = LOG_SPEC

    def __init__(self, *answers: Outcome | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> Outcome:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


DOWN = Retry(error="connection refused", error_class="ConnectionRefusedError")
PUT_OFF = Retry(error="451 greylisted", error_class="SMTP451", provider_fault=False)
INVALID = Failed(error="not a valid number", error_class="Twilio21211")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def route(a: Scripted, b: Scripted, clock: Clock, failures: int = 2) -> Failover:
    breakers = Breakers(BreakerPolicy(failures=failures, cooldown_s=10), Metrics(), clock)
    return Failover(
        "log", {"a": a, "b": b}, breakers, lambda tenant, channel: ["a", "b"], Metrics()
    )


def envelope() -> Envelope:
    return Envelope(str(uuid7()), str(uuid7()), "ops", LogPayload(message="hi"), 1)


async def test_a_provider_in_trouble_is_skipped_once_its_breaker_opens() -> None:
    a, b, clock = Scripted(DOWN), Scripted(Delivered()), Clock()
    failover = route(a, b, clock)

    first = await failover.send(envelope())
    second = await failover.send(envelope())
    third = await failover.send(envelope())
    clock.now += 10  # the cool-down: one probe goes to a
    fourth = await failover.send(envelope())

    assert [t.provider for t in first] == ["a", "b"]
    assert [t.provider for t in second] == ["a", "b"]
    assert [t.provider for t in third] == ["b"]  # open: straight to b
    assert [t.provider for t in fourth] == ["a", "b"]  # the probe failed: open again
    assert a.calls == 3
    assert isinstance(final_outcome(third), Delivered)


async def test_a_message_put_off_does_not_count_against_the_provider() -> None:
    a, b, clock = Scripted(PUT_OFF), Scripted(Delivered()), Clock()
    failover = route(a, b, clock)

    for _ in range(5):
        tries = await failover.send(envelope())

    assert [t.provider for t in tries] == ["a", "b"]  # still tried first: never opened
    assert a.calls == 5


async def test_a_permanent_refusal_is_not_sent_elsewhere() -> None:
    a, b, clock = Scripted(INVALID), Scripted(Delivered()), Clock()

    tries = await route(a, b, clock).send(envelope())

    assert [t.provider for t in tries] == ["a"]
    assert final_outcome(tries) == INVALID
    assert b.calls == 0


async def test_when_every_provider_is_paused_the_retry_waits_for_a_probe() -> None:
    a, b, clock = Scripted(DOWN), Scripted(DOWN), Clock()
    failover = route(a, b, clock, failures=1)
    both_failed = await failover.send(envelope())
    clock.now += 4

    paused = await failover.send(envelope())

    combined = final_outcome(both_failed)
    assert isinstance(combined, Retry)
    assert combined.error == "a: connection refused; b: connection refused"
    [held] = paused
    assert held.provider is None
    assert isinstance(held.outcome, Retry)
    assert held.outcome.error_class == "CircuitOpen"
    assert held.outcome.after_s is not None
    assert 6 <= held.outcome.after_s <= 16  # reopens in 6 s, spread over a cool-down
    assert (a.calls, b.calls) == (1, 1)


async def test_a_channel_that_raises_fails_that_message_alone() -> None:
    # Given: a provider whose channel raises on a message it cannot build (breaker at 1 fault)
    a, b, clock = Scripted(ValueError("bad header")), Scripted(Delivered()), Clock()
    failover = route(a, b, clock, failures=1)

    # When: three such messages are sent
    attempts = [await failover.send(envelope()) for _ in range(3)]

    # Then: each failed for good at a, was not sent elsewhere, and a's breaker stayed closed
    assert all([t.provider for t in tries] == ["a"] for tries in attempts)
    assert all(final_outcome(tries) == Failed("ValueError: bad header", "ValueError")
               for tries in attempts)  # fmt: skip
    assert (a.calls, b.calls) == (3, 0)


def _delivery() -> Delivery:
    job = Job(
        id=str(uuid7()),
        tenant_id=str(uuid7()),
        kind=JobKind.NOTIFICATION,
        channel="log",
        recipient="ops",
        payload={"message": "hi"},
        priority=2,
        max_attempts=3,
    )
    return Delivery(stream="s", entry_id="1-0", attempt=2, job=job)


def test_only_an_attempt_refused_by_open_breakers_is_not_made() -> None:
    # Given: an attempt every open breaker refused, one decided without a call for its own
    # reason (a bad payload), and one whose provider answered "not configured"
    refused = Try(None, Retry(error="paused", error_class=CIRCUIT_OPEN), utcnow(), 0.0)
    configured = Try("twilio", Retry(error="no sender", error_class="NotConfigured"), utcnow(), 0)
    bad = Failed(error="subject", error_class="InvalidPayload")

    # Then: only the first gives its attempt back; the others count against max_attempts
    assert not Done.of(_delivery(), [refused]).made
    assert Done.without_call(_delivery(), bad).made
    assert Done.of(_delivery(), [configured]).made
    assert Done.of(_delivery(), [refused, configured]).made
