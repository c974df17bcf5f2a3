"""The delivery ledger: the worker side of a notification's row.

Claim before sending, heartbeat while in hand, record the outcome after. Every transition takes
a whole batch in one statement, so the hot path pays one round trip per batch, never one per
notification, and every statement changes the row and appends its audit rows together.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from pulse.core.ids import uuid7
from pulse.core.models import RECEIPT_CHANNEL, Job, Status
from pulse.store.rows import JOB_COLUMNS, job_from_row

# $4 maps the ids of entries past step 0 to their step (a jsonb object, usually empty): a
# lookup per row, where a join of the id list with the table was planned as a nested loop.
#
# A 'scheduled' row is claimed once due, with a second's grace for clocks (the scheduler
# streamed it and has not recorded 'queued' yet: its 'queued' audit row is written here then,
# once: should the scheduler's record commit meanwhile, audit_due_once keeps that one). One not
# due (rescheduled later meanwhile) is answered as finished: that early entry is acknowledged,
# and the due-time index (or the reconciler) streams the job when it is due.
_CLAIM = """
WITH s AS (
    SELECT id FROM notifications WHERE id = ANY($1::uuid[]) AND status = 'scheduled'
), c AS (
    UPDATE notifications n
       SET status = 'delivering', attempts = n.attempts + 1, updated_at = now()
     WHERE n.id = ANY($1::uuid[])
       AND n.step = coalesce(($4::jsonb ->> n.id::text)::int, 0)
       AND (n.status IN ('queued', 'retrying')
            OR (n.status = 'scheduled' AND n.send_at <= now() + interval '1 second')
            OR (n.status = 'delivering' AND n.updated_at < now() - make_interval(secs => $3)))
    RETURNING n.id, n.attempts
), a AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, status, $2, detail FROM (
        SELECT id, 'queued' AS status, 'due' AS detail, 0 AS o FROM c WHERE id IN (SELECT id FROM s)
        UNION ALL
        SELECT id, 'delivering', NULL, 1 FROM c
    ) x ORDER BY o
    ON CONFLICT (notification_id) WHERE detail = 'due' DO NOTHING
)
SELECT id::text AS id, true AS claimed FROM c
UNION ALL
SELECT id::text, false FROM notifications n
 WHERE n.id = ANY($1::uuid[])
   AND (n.status IN ('delivered', 'failed', 'cancelled', 'skipped')
        OR (n.status = 'scheduled' AND n.send_at > now() + interval '1 second')
        OR n.step <> coalesce(($4::jsonb ->> n.id::text)::int, 0))
"""

_TOUCH = """
UPDATE notifications SET updated_at = now()
 WHERE id = ANY($1::uuid[]) AND status = 'delivering'
"""

# One statement per acker batch: the status (only rows still 'delivering' move, so recording
# twice changes nothing), an audit row, one attempt row per provider call, the dead letters, and
# a receipt for each notification that ended for good whose tenant has an endpoint: created
# with the final status or not at all.
_RECORD = f"""
WITH o AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[],
        $8::text[], $9::int[], $23::bool[], $10::uuid[]
    ) AS o(id, status, error, error_class, dead, stream, entry_id, provider, next_step, made,
           receipt_id)
), u AS (
    UPDATE notifications n
       SET status = o.status,
           attempts = n.attempts - CASE WHEN o.made THEN 0 ELSE 1 END,
           last_error = o.error,
           updated_at = now(),
           provider = coalesce(o.provider, n.provider),
           step = coalesce(o.next_step, n.step),
           delivered_at = CASE WHEN o.status = 'delivered' THEN now() ELSE n.delivered_at END,
           failed_at = CASE WHEN o.status = 'failed' THEN now() ELSE n.failed_at END
      FROM o
     WHERE n.id = ANY($1::uuid[]) AND n.id = o.id AND n.status = 'delivering'
    RETURNING n.id, n.tenant_id, n.channel, n.recipient, n.fallback, n.step, n.provider,
              n.attempts, n.metadata, n.priority, n.created_at, n.delivered_at, n.failed_at,
              n.receipt_for, o.status, o.error, o.error_class, o.dead, o.stream, o.entry_id,
              o.receipt_id
), a AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, status, $21, error FROM u
), t AS (
    INSERT INTO attempts (notification_id, number, channel, provider, started_at, duration_ms,
                          outcome, error_class, error_message, provider_response,
                          provider_message_id, worker)
    SELECT t.*, $21 FROM unnest(
        $11::uuid[], $12::int[], $13::text[], $14::text[], $15::timestamptz[], $16::float8[],
        $17::text[], $18::text[], $19::text[], $20::text[], $24::text[]
    ) AS t(id, number, channel, provider, started_at, duration_ms, outcome, error_class,
           error, response, provider_message_id)
     WHERE t.id IN (SELECT id FROM u)
), d AS (
    INSERT INTO dead_letters (notification_id, tenant_id, channel, reason, error_class,
                              stream, entry_id)
    SELECT id, tenant_id, channel, error, error_class, stream, entry_id FROM u WHERE dead
    ON CONFLICT (stream, entry_id) DO NOTHING
), r AS (
    INSERT INTO notifications
        (id, tenant_id, channel, recipient, payload, priority, status, max_attempts,
         receipt_for)
    SELECT u.receipt_id, u.tenant_id, '{RECEIPT_CHANNEL}', e.url,
           jsonb_build_object(
               'type', 'notification.' || u.status,
               'data', jsonb_build_object(
                   'id', u.id, 'status', u.status,
                   'channel', CASE WHEN u.step = 0 THEN u.channel
                                   ELSE u.fallback -> (u.step - 1) ->> 'channel' END,
                   'recipient', CASE WHEN u.step = 0 THEN u.recipient
                                     ELSE u.fallback -> (u.step - 1) ->> 'recipient' END,
                   'provider', u.provider, 'step', u.step, 'attempts', u.attempts,
                   'error', u.error, 'metadata', u.metadata, 'created_at', u.created_at,
                   'finished_at', coalesce(u.delivered_at, u.failed_at, now()))),
           u.priority, 'queued', $22, u.id
      FROM u JOIN receipt_endpoints e ON e.tenant_id = u.tenant_id AND u.status = ANY(e.events)
     WHERE u.receipt_for IS NULL AND u.status IN ('delivered', 'failed', 'skipped')
       AND u.channel NOT LIKE 'task:%'  -- tasks are followed on /api/jobs, not receipts
    RETURNING *
), ra AS (
    INSERT INTO audit (notification_id, status, detail)
    SELECT id, 'queued', 'receipt of ' || receipt_for FROM r
)
SELECT {JOB_COLUMNS} FROM r
"""

_UNDECODABLE = """
INSERT INTO dead_letters (reason, error_class, stream, entry_id, raw)
SELECT reason, 'UndecodableMessage', stream, entry_id, raw
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(reason, stream, entry_id, raw)
ON CONFLICT (stream, entry_id) DO NOTHING
"""

_OPEN = f"""
SELECT {JOB_COLUMNS}, updated_at
  FROM notifications
 WHERE status IN ('queued', 'delivering', 'retrying')
   AND updated_at < now() - make_interval(secs => $1)
   AND (updated_at, id) > ($2, $3::uuid)
 ORDER BY updated_at, id
 LIMIT $4
"""

# Only rows still unfinished: the reconciler read them a moment ago, and their holder may have
# settled them since (a 'queued' audit row after 'delivered' would be a lie). The row lock
# orders this audit row before or after the settling one; a row locked right now is being
# settled or claimed and is left for the next pass.
_REQUEUED = """
INSERT INTO audit (notification_id, status, worker, detail)
SELECT id, 'queued', $2, 're-enqueued: missing from Redis' FROM notifications
 WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'delivering', 'retrying')
   FOR UPDATE SKIP LOCKED
RETURNING notification_id::text
"""

# A job the stream cannot carry fails with its reason, if still unfinished (and not being
# settled or claimed right now: a locked row is left for the next pass, as above).
_UNSTREAMABLE = """
WITH f AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS f(id, reason)
), l AS (
    SELECT id FROM notifications
     WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'delivering', 'retrying')
       FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE notifications n
       SET status = 'failed', last_error = f.reason, failed_at = now(), updated_at = now()
      FROM f
     WHERE n.id IN (SELECT id FROM l) AND n.id = f.id
    RETURNING n.id, f.reason
)
INSERT INTO audit (notification_id, status, worker, detail)
SELECT id, 'failed', $3, reason FROM u
RETURNING notification_id::text
"""


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """What one finished attempt does to its notification: the new status, maybe a dead letter,
    maybe the next fallback step (then the status is ``queued``)."""

    notification_id: str
    status: Status
    error: str | None
    error_class: str | None
    dead: bool
    stream: str
    entry_id: str
    provider: str | None = None  # the provider that delivered it
    next_step: int | None = None
    made: bool = True  # False: no provider was called, the claim's attempt is given back


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One provider call (or the reason none was made) within attempt ``number``."""

    notification_id: str
    number: int
    channel: str
    provider: str | None
    started_at: datetime
    duration_ms: float
    outcome: str  # delivered | retry | failed
    error_class: str | None
    error: str | None
    response: str | None
    provider_message_id: str | None = None  # the provider's id of the message it accepted


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: set[str]
    finished: set[str]


@dataclass(frozen=True, slots=True)
class UndecodableRow:
    stream: str
    entry_id: str
    raw: bytes
    reason: str


_OUTCOME_FIELDS = (
    "notification_id", "status", "error", "error_class", "dead", "stream", "entry_id",
    "provider", "next_step",
)  # fmt: skip
FINAL = frozenset({Status.DELIVERED, Status.FAILED, Status.SKIPPED})  # the ends receipts report
_ATTEMPT_FIELDS = (
    "notification_id", "number", "channel", "provider", "started_at", "duration_ms", "outcome",
    "error_class", "error", "response",
)  # fmt: skip


class DeliveryLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, jobs: Sequence[Job], worker: str, lease_s: float) -> Claim:
        """Move the jobs' notifications to ``delivering`` (the delivery ledger).

        Ones already delivered, failed or cancelled, or whose chain has moved past the job's
        step, come back as ``finished``: their entries are acknowledged without sending. Ones a
        live worker holds (claimed or touched less than ``lease_s`` ago) are neither: after
        Redis lost its data, the reconciler's copy must not overtake a delivery in hand.
        """
        if not jobs:
            return Claim(set(), set())
        ids = [job.id for job in jobs]
        steps = msgspec.json.encode({job.id: job.step for job in jobs if job.step}).decode()
        rows = await self._pool.fetch(_CLAIM, ids, worker, lease_s, steps)
        return Claim(
            claimed={row["id"] for row in rows if row["claimed"]},
            finished={row["id"] for row in rows if not row["claimed"]},
        )

    async def touch(self, ids: Sequence[str]) -> None:
        """Heartbeat held notifications, so their claim stays fresh while they are in hand."""
        if ids:
            await self._pool.execute(_TOUCH, list(ids))

    async def record(
        self,
        outcomes: Sequence[OutcomeRow],
        attempts: Sequence[AttemptRow],
        worker: str,
        receipt_max_attempts: int,
    ) -> list[Job]:
        """Persist a batch of attempts in one statement (see ``_RECORD``); return the jobs of
        the receipts it queued, to be streamed."""
        if not outcomes:
            return []
        columns = [[getattr(o, name) for o in outcomes] for name in _OUTCOME_FIELDS]
        # the id each receipt would take, if its tenant wants one (UUIDv7: lists stay in order)
        columns.append([str(uuid7()) if o.status in FINAL else None for o in outcomes])
        tries = [[getattr(a, name) for a in attempts] for name in _ATTEMPT_FIELDS]
        made = [o.made for o in outcomes]  # $23
        message_ids = [a.provider_message_id for a in attempts]  # $24
        rows = await self._pool.fetch(
            _RECORD, *columns, *tries, worker, receipt_max_attempts, made, message_ids
        )
        return [job_from_row(row) for row in rows]

    async def record_undecodable(self, rows: Sequence[UndecodableRow]) -> None:
        """Keep stream entries that could not be decoded, raw bytes and all."""
        if rows:
            await self._pool.execute(
                _UNDECODABLE,
                [r.reason for r in rows],
                [r.stream for r in rows],
                [r.entry_id for r in rows],
                [r.raw for r in rows],
            )

    async def open_jobs(
        self, older_than_s: float, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[Job, datetime]]:
        """Unfinished notifications untouched for ``older_than_s``, oldest first (keyset paged),
        as jobs of their current step with their update time: what the reconciler checks
        against Redis."""
        since, last_id = after or (datetime.min.replace(tzinfo=UTC), str(uuid.UUID(int=0)))
        rows = await self._pool.fetch(_OPEN, older_than_s, since, last_id, limit)
        return [(job_from_row(row), row["updated_at"]) for row in rows]

    @asynccontextmanager
    async def requeueing(self, ids: Sequence[str], worker: str) -> AsyncIterator[set[str]]:
        """Audit the re-enqueueing of those still unfinished and yield their ids, the ones to
        stream, inside the transaction: the audit rows commit only if streaming them did not
        raise, so a copy is never streamed without its audit row, nor audited unstreamed."""
        if not ids:
            yield set()
            return
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_REQUEUED, list(ids), worker)
            yield {row[0] for row in rows}

    async def fail_unstreamable(self, reasons: Mapping[str, str], worker: str) -> set[str]:
        """Fail unfinished notifications whose job the stream cannot carry (job id -> reason),
        with an audit row saying why; return the ids that moved."""
        if not reasons:
            return set()
        rows = await self._pool.fetch(_UNSTREAMABLE, list(reasons), list(reasons.values()), worker)
        return {row[0] for row in rows}
