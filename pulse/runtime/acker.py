"""Settles finished attempts in batches: PostgreSQL first, then one Redis transition each.

For every attempt the pure ``retry.decide`` picks acknowledge, retry later or dead-letter; a
dead letter whose notification has a fallback chain moves to the chain's next step instead.
The batch's statuses, audit, attempt and dead-letter rows are committed in one statement,
with the receipts of the notifications it finished; only then are the stream entries
acknowledged, scheduled for retry, moved to the dead letters or to their next step, and the
receipts streamed. If PostgreSQL is down, results wait here and nothing is acknowledged; if
the process dies first, the entries are still pending in Redis and come back after their
lease (and committed receipts are streamed by the reconciler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pulse.core.models import Job, Status
from pulse.core.ports import Delivered
from pulse.core.retry import Ack, DeadLetter, Decision, RetryIn, RetryPolicy, decide
from pulse.core.timeutil import now_ms
from pulse.metrics import Metrics
from pulse.queue.consumer import Consumer, Entry
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.fallbacks import FallbackStreams
from pulse.queue.pending import PendingEntries
from pulse.queue.publisher import Publisher
from pulse.runtime.backoff import delay_for
from pulse.runtime.failover import OUTCOME_NAMES
from pulse.runtime.leaser import Leaser
from pulse.runtime.work import Done
from pulse.store.ledger import AttemptRow, DeliveryLedger, OutcomeRow, UndecodableRow

logger = logging.getLogger("pulse.runtime.acker")
SETTLE_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # shorter first steps: results are waiting
PUBLISH_CHUNK = 500


@dataclass
class Settlement:
    """What one batch turns into: rows for PostgreSQL, transitions for Redis."""

    outcomes: list[OutcomeRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    acks: list[Entry] = field(default_factory=list)
    retries: list[tuple[Entry, int, bool]] = field(default_factory=list)  # due, attempt made
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    fallbacks: list[tuple[Entry, Job]] = field(default_factory=list)


Redact = Callable[[str | None], str | None]


def settle(
    results: Sequence[Done],
    policy: RetryPolicy,
    rng: random.Random,
    now: int,
    redact: Redact = lambda text: text,
) -> Settlement:
    """Pure: decide each attempt's fate and collect the writes it needs (with secrets
    scrubbed from errors and provider responses)."""
    plan = Settlement()
    for done in results:
        job, entry = done.item.job, done.item.entry
        decision = _decide(done, policy, rng)
        following = job.next_step() if isinstance(decision, DeadLetter) else None
        plan.outcomes.append(_outcome_row(done, decision, following, redact))
        plan.attempts.extend(_attempt_rows(done, redact))
        if following is not None:
            plan.fallbacks.append((entry, following))
        elif isinstance(decision, Ack):
            plan.acks.append(entry)
        elif isinstance(decision, RetryIn):
            plan.retries.append((entry, now + int(decision.delay_s * 1000), done.made))
        else:
            plan.dead.append((entry, decision.reason))
    return plan


def _decide(done: Done, policy: RetryPolicy, rng: random.Random) -> Decision:
    """An attempt that called no provider (every breaker open) was not made: it is decided as
    if the attempts made so far were all, so it never uses up ``max_attempts``."""
    attempt = done.item.attempt if done.made else done.item.attempt - 1
    return decide(done.outcome, attempt, done.item.job.max_attempts, policy, rng)


def _outcome_row(
    done: Done, decision: Decision, following: Job | None, redact: Redact
) -> OutcomeRow:
    outcome, job = done.outcome, done.item.job
    status = {Ack: Status.DELIVERED, RetryIn: Status.RETRYING}.get(type(decision), Status.FAILED)
    error = decision.reason if isinstance(decision, DeadLetter) else _error(done)
    if following is not None:
        status, error = Status.QUEUED, f"fallback {job.channel} -> {following.channel}: {error}"
    return OutcomeRow(
        notification_id=job.id,
        status=status,
        error=redact(error),
        error_class=None if isinstance(outcome, Delivered) else outcome.error_class,
        dead=isinstance(decision, DeadLetter) and following is None,
        stream=done.item.entry.stream,
        entry_id=done.item.entry.entry_id,
        provider=done.tries[-1].provider if isinstance(outcome, Delivered) else None,
        next_step=None if following is None else following.step,
        made=done.made,
    )


def _attempt_rows(done: Done, redact: Redact) -> list[AttemptRow]:
    job = done.item.job
    return [
        AttemptRow(
            notification_id=job.id,
            number=done.item.attempt,
            channel=job.channel,
            provider=call.provider,
            started_at=call.started_at,
            duration_ms=call.duration_s * 1000,
            outcome=OUTCOME_NAMES[type(call.outcome)],
            error_class=None if isinstance(call.outcome, Delivered) else call.outcome.error_class,
            error=None if isinstance(call.outcome, Delivered) else redact(call.outcome.error),
            response=redact(call.outcome.response),
        )
        for call in done.tries
    ]


def _error(done: Done) -> str | None:
    outcome = done.outcome
    return None if isinstance(outcome, Delivered) else outcome.error


class Redactor:
    """Replaces every configured secret in a text with ``***``: provider errors sometimes echo
    what they were sent, and attempt rows are read by people."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True, slots=True)
class Transitions:
    """The Redis side of settling: one atomic script per entry, and the receipts' XADDs."""

    consumer: Consumer
    pending: PendingEntries
    dead_letters: DeadLetterStream
    fallbacks: FallbackStreams
    publisher: Publisher


class Acker:
    def __init__(
        self,
        ledger: DeliveryLedger,
        redis_side: Transitions,
        leaser: Leaser,
        metrics: Metrics,
        *,
        policy: RetryPolicy,
        batch_size: int,
        interval_s: float,
        secrets: Sequence[str] = (),
        receipt_max_attempts: int = 10,
    ) -> None:
        self._ledger = ledger
        self._redis = redis_side
        self._receipt_max_attempts = receipt_max_attempts
        self._counters = {
            Status.DELIVERED: metrics.delivered,
            Status.RETRYING: metrics.retried,
            Status.FAILED: metrics.failed,
        }
        self._unpublished: list[Job] = []
        self._leaser = leaser
        self._metrics = metrics
        self._policy = policy
        self._redact = Redactor(secrets)
        self._rng = random.Random()  # seeded from os.urandom: every process jitters its own way
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._results: list[Done] = []
        self._ack_only: list[Entry] = []
        self._undecodable: list[Entry] = []
        self._wakeup = asyncio.Event()
        self._failures = 0

    def submit(self, done: Done) -> None:
        self._results.append(done)
        if len(self._results) >= self._batch_size:
            self._wakeup.set()

    def ack_only(self, entries: Sequence[Entry]) -> None:
        """Acknowledge entries whose notification needs no state change (already finished)."""
        self._ack_only.extend(entries)
        self._wakeup.set()

    def dead_letter_undecodable(self, entries: Sequence[Entry]) -> None:
        self._undecodable.extend(entries)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._results) + len(self._ack_only) + len(self._undecodable)

    async def run(self) -> None:
        """Flush every ``interval`` or as soon as a batch is full; runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval_s)
            self._wakeup.clear()
            await self.flush()

    async def drain(self, timeout_s: float) -> bool:
        """Flush until nothing is left (shutdown); False if that took longer than allowed, in
        which case the rest stays pending in Redis for another worker."""
        try:
            await asyncio.wait_for(self._flush_all(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _flush_all(self) -> None:
        while self.backlog:
            await self.flush()

    async def flush(self) -> None:
        batch = (self._results, self._ack_only, self._undecodable)
        self._results, self._ack_only, self._undecodable = [], [], []
        if not any(batch):
            return
        try:
            await self._settle(*batch)
            self._failures = 0
        except asyncio.CancelledError:
            self._restore(*batch)
            raise
        except Exception:
            self._restore(*batch)
            delay = delay_for(self._failures, SETTLE_DELAYS_S)
            self._failures += 1
            logger.exception("could not settle %d results; retrying in %.2fs", len(batch[0]), delay)
            await asyncio.sleep(delay)

    def _restore(self, results: list[Done], ack_only: list[Entry], bad: list[Entry]) -> None:
        """Put a batch back in front; settling twice is harmless: only ``delivering`` rows move,
        and every Redis transition tolerates a second run."""
        self._results[:0] = results
        self._ack_only[:0] = ack_only
        self._undecodable[:0] = bad

    async def _settle(self, results: list[Done], ack_only: list[Entry], bad: list[Entry]) -> None:
        now = now_ms()
        plan = settle(results, self._policy, self._rng, now, self._redact)
        worker = self._redis.consumer.name
        receipts = await self._ledger.record(
            plan.outcomes, plan.attempts, worker, self._receipt_max_attempts
        )
        self._unpublished.extend(receipts)  # kept until streamed, whatever fails below
        await self._ledger.record_undecodable([_undecodable_row(e) for e in bad])
        await self._redis.consumer.ack([*plan.acks, *ack_only])
        await self._redis.pending.retry_later(plan.retries)
        await self._redis.dead_letters.move(
            [*plan.dead, *((e, f"undecodable: {e.error}") for e in bad)], now
        )
        await self._redis.fallbacks.advance(plan.fallbacks)
        for done in results:
            self._leaser.release(done.item.lease_key)
        self._count(plan, results)
        await self._publish_receipts()

    async def _publish_receipts(self) -> None:
        while self._unpublished:
            chunk = self._unpublished[:PUBLISH_CHUNK]
            await self._redis.publisher.publish(chunk)
            del self._unpublished[: len(chunk)]

    def _count(self, plan: Settlement, results: list[Done]) -> None:
        tally = Counter(
            (row.status, done.item.job.channel)
            for done, row in zip(results, plan.outcomes, strict=True)
        )
        for (status, channel), count in tally.items():
            counter = self._counters.get(status)
            if counter is not None:
                counter.labels(channel).inc(count)
        for entry, following in plan.fallbacks:
            source = entry.job.channel if entry.job else "unknown"
            self._metrics.fallbacks.labels(source, following.channel).inc()


def _undecodable_row(entry: Entry) -> UndecodableRow:
    raw = entry.error.raw.get(b"m", b"") if entry.error is not None else b""
    return UndecodableRow(entry.stream, entry.entry_id, raw, f"undecodable: {entry.error}")
