"""Settling, decided in pure Python: what a batch of finished attempts turns into.

For every attempt ``retry.decide`` picks acknowledge, retry later or dead-letter; a dead letter
whose notification has a fallback chain moves to the chain's next step instead. The result is the
rows PostgreSQL records and the transitions Redis then makes, with every configured secret
scrubbed from errors and provider responses (people read attempt rows).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pulse.core.models import Job, JobKind, Status
from pulse.core.ports import Delivered
from pulse.core.redaction import Redactor as Redactor  # its home moved to core (logs use it)
from pulse.core.retry import Ack, DeadLetter, Decision, RetryIn, RetryPolicy, decide
from pulse.queue.transitions import SettledBatch
from pulse.runtime.work import OUTCOME_NAMES, Done
from pulse.store.ledger import AttemptRow, OutcomeRow

Redact = Callable[[str | None], str | None]


@dataclass
class Settlement:
    """What one batch turns into: rows for PostgreSQL, transitions for Redis."""

    outcomes: list[OutcomeRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    redis: SettledBatch = field(default_factory=SettledBatch)


def settle(
    results: Sequence[Done],
    policy: RetryPolicy,
    rng: random.Random,
    now: int,
    redact: Redact = lambda text: text,
) -> Settlement:
    """Decide each attempt's fate and collect the writes it needs."""
    plan = Settlement()
    for done in results:
        decision = _decide(done, policy, rng)
        following = done.delivery.job.next_step() if isinstance(decision, DeadLetter) else None
        plan.outcomes.append(_outcome_row(done, decision, following, redact))
        plan.attempts.extend(_attempt_rows(done, redact))
        _transition(plan.redis, done, decision, following, now)
    return plan


def _transition(
    redis: SettledBatch, done: Done, decision: Decision, following: Job | None, now: int
) -> None:
    entry = done.delivery.ref
    if following is not None:
        redis.fallbacks.append((entry, following))
    elif isinstance(decision, Ack):
        redis.acks.append(entry)
    elif isinstance(decision, RetryIn):
        redis.retries.append((entry, now + int(decision.delay_s * 1000), done.made))
    else:
        redis.dead.append((entry, decision.reason))


def _decide(done: Done, policy: RetryPolicy, rng: random.Random) -> Decision:
    """An attempt that called no provider (every breaker open) was not made: it is decided as
    if the attempts made so far were all, so it never uses up ``max_attempts``. A skipped one
    (its recipient's cap) is over: acknowledged, not dead-lettered."""
    if done.skipped:
        return Ack()
    attempt = done.delivery.attempt if done.made else done.delivery.attempt - 1
    return decide(done.outcome, attempt, done.delivery.job.max_attempts, policy, rng)


def _outcome_row(
    done: Done, decision: Decision, following: Job | None, redact: Redact
) -> OutcomeRow:
    outcome, job = done.outcome, done.delivery.job
    status = {Ack: Status.DELIVERED, RetryIn: Status.RETRYING}.get(type(decision), Status.FAILED)
    status = Status.SKIPPED if done.skipped else status
    error = decision.reason if isinstance(decision, DeadLetter) else _error(done)
    if following is not None:
        status, error = Status.QUEUED, f"fallback {job.channel} -> {following.channel}: {error}"
    return OutcomeRow(
        notification_id=job.id,
        status=status,
        error=redact(error),
        error_class=None if isinstance(outcome, Delivered) else outcome.error_class,
        dead=isinstance(decision, DeadLetter) and following is None,
        stream=done.delivery.stream,
        entry_id=done.delivery.entry_id,
        provider=done.tries[-1].provider if isinstance(outcome, Delivered) else None,
        next_step=None if following is None else following.step,
        made=done.made,
        run=done.run,
    )


def _attempt_rows(done: Done, redact: Redact) -> list[AttemptRow]:
    """One row per provider call. A task calls no provider: its runs are recorded by its
    row (status, attempts, last error), its audit rows and, results kept, its ``job_results``
    row (start, end, result or error); no reader of ``attempts`` shows tasks, so none is
    written for them (a write per run saved)."""
    job = done.delivery.job
    if job.kind is JobKind.TASK:
        return []
    return [
        AttemptRow(
            notification_id=job.id,
            number=done.delivery.attempt,
            channel=job.channel,
            provider=call.provider,
            started_at=call.started_at,
            duration_ms=call.duration_s * 1000,
            outcome=OUTCOME_NAMES[type(call.outcome)],
            error_class=None if isinstance(call.outcome, Delivered) else call.outcome.error_class,
            error=None if isinstance(call.outcome, Delivered) else redact(call.outcome.error),
            response=redact(call.outcome.response),
            provider_message_id=(
                call.outcome.provider_id if isinstance(call.outcome, Delivered) else None
            ),
        )
        for call in done.tries
    ]


def _error(done: Done) -> str | None:
    outcome = done.outcome
    return None if isinstance(outcome, Delivered) else outcome.error
