"""Settles finished attempts in batches: PostgreSQL first, then one Redis transition each.

For every attempt the pure ``retry.decide`` picks acknowledge, retry later or dead-letter. The
batch's statuses, audit, attempt and dead-letter rows are committed in one statement; only
then are the stream entries acknowledged, scheduled for retry or moved to the dead letters.
If PostgreSQL is down, results wait here and nothing is acknowledged; if the process dies
first, the entries are still pending in Redis and come back after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from pulse.metrics import Metrics
from pulse.models import Status
from pulse.ports import Delivered, Failed, Retry
from pulse.queue.consumer import Consumer, Entry
from pulse.queue.dead_letters import DeadLetterStream
from pulse.queue.pending import PendingEntries
from pulse.retry import Ack, DeadLetter, Decision, RetryIn, RetryPolicy, decide
from pulse.runtime.backoff import delay_for
from pulse.runtime.leaser import Leaser
from pulse.runtime.work import Done
from pulse.store.notifications import NotificationStore, OutcomeRow, UndecodableRow
from pulse.timeutil import now_ms

logger = logging.getLogger("pulse.runtime.acker")
SETTLE_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # shorter first steps: results are waiting


@dataclass
class Settlement:
    """What one batch turns into: rows for PostgreSQL, transitions for Redis."""

    rows: list[OutcomeRow] = field(default_factory=list)
    acks: list[Entry] = field(default_factory=list)
    retries: list[tuple[Entry, int]] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)


def settle(
    results: Sequence[Done],
    policy: RetryPolicy,
    rng: random.Random,
    now: int,
    redact: Callable[[str | None], str | None] = lambda text: text,
) -> Settlement:
    """Pure: decide each attempt's fate and collect the writes it needs (with secrets
    scrubbed from errors and provider responses)."""
    plan = Settlement()
    for done in results:
        job, entry = done.item.job, done.item.entry
        decision = decide(done.outcome, entry.attempt, job.max_attempts, policy, rng)
        row = _row(done, decision)
        plan.rows.append(replace(row, error=redact(row.error), response=redact(row.response)))
        if isinstance(decision, Ack):
            plan.acks.append(entry)
        elif isinstance(decision, RetryIn):
            plan.retries.append((entry, now + int(decision.delay_s * 1000)))
        else:
            plan.dead.append((entry, decision.reason))
    return plan


def _row(done: Done, decision: Decision) -> OutcomeRow:
    outcome = done.outcome
    status = {Ack: Status.DELIVERED, RetryIn: Status.RETRYING}.get(type(decision), Status.FAILED)
    error = decision.reason if isinstance(decision, DeadLetter) else _error(outcome)
    return OutcomeRow(
        notification_id=done.item.job.id,
        status=status,
        error=error,
        number=done.item.attempt,
        started_at=done.started_at,
        duration_ms=done.duration_s * 1000,
        outcome={Delivered: "delivered", Retry: "retry"}.get(type(outcome), "failed"),
        error_class=None if isinstance(outcome, Delivered) else outcome.error_class,
        response=outcome.response,
        dead=isinstance(decision, DeadLetter),
        stream=done.item.entry.stream,
        entry_id=done.item.entry.entry_id,
    )


def _error(outcome: Delivered | Retry | Failed) -> str | None:
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


class Acker:
    def __init__(
        self,
        store: NotificationStore,
        consumer: Consumer,
        pending: PendingEntries,
        dead_letters: DeadLetterStream,
        leaser: Leaser,
        metrics: Metrics,
        *,
        policy: RetryPolicy,
        batch_size: int,
        interval_s: float,
        secrets: Sequence[str] = (),
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._pending = pending
        self._dead_letters = dead_letters
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
        await self._store.record(plan.rows, self._consumer.name)
        await self._store.record_undecodable([_undecodable_row(e) for e in bad])
        await self._consumer.ack([*plan.acks, *ack_only])
        await self._pending.retry_later(plan.retries)
        await self._dead_letters.move(
            [*plan.dead, *((e, f"undecodable: {e.error}") for e in bad)], now
        )
        for done in results:
            self._leaser.release(done.item.lease_key)
        self._count(plan, results)

    def _count(self, plan: Settlement, results: list[Done]) -> None:
        for done in results:
            channel = done.item.job.handler
            if isinstance(done.outcome, Delivered):
                self._metrics.delivered.labels(channel).inc()
            elif isinstance(done.outcome, Retry):
                self._metrics.retried.labels(channel).inc()
        for entry, _ in plan.dead:
            channel = entry.job.handler if entry.job else "unknown"
            self._metrics.failed.labels(channel).inc()


def _undecodable_row(entry: Entry) -> UndecodableRow:
    raw = entry.error.raw.get(b"m", b"") if entry.error is not None else b""
    return UndecodableRow(entry.stream, entry.entry_id, raw, f"undecodable: {entry.error}")
