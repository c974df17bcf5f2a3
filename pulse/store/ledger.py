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
from pulse.core.storable import storable_json, storable_text
from pulse.store.rows import JOB_COLUMNS, job_from_row

# $4 maps the ids of entries past step 0 to their step (a jsonb object, usually empty): a
# lookup per row, where a join of the id list with the table was planned as a nested loop.
#
# A 'scheduled' row is claimed once due, with a second's grace for clocks (the scheduler
# streamed it and has not recorded 'queued' yet: its 'queued' audit row is written here then,
# once: should the scheduler's record commit meanwhile, audit_due_once keeps that one). One not
# due (rescheduled later meanwhile) is answered as finished: that early entry is acknowledged,
# and the due-time index (or the reconciler) streams the job when it is due.
# The batch's id range, as subqueries: PostgreSQL 15 prunes partitions at run time by a range
# from subqueries, never by `= ANY($1)`, so without it every batch probes the primary key of
# every weekly partition (a drain 40% slower with four filled weeks); with it, the one or two
# weeks its ids were made in.
_SPAN = (
    "BETWEEN (SELECT i FROM unnest($1::uuid[]) AS i ORDER BY i LIMIT 1)"
    " AND (SELECT i FROM unnest($1::uuid[]) AS i ORDER BY i DESC LIMIT 1)"
)

# Every statement that finds rows by id tests their status as `(...) IS TRUE`, which no partial
# index on status matches: with statistics from when a week's partition held no open row (a
# filled, analysed database), the planner otherwise reads the whole `notifications_open` index
# (every queued row) for each batch instead of looking the batch's ids up: a drain 4x slower
# with 10 million stored notifications (bench/retention_scale.py). `x IS TRUE` is `x` in a
# WHERE clause (NULL is not true either).
_CLAIM = f"""
WITH s AS MATERIALIZED (
    SELECT id FROM notifications
     WHERE id = ANY($1::uuid[]) AND id {_SPAN} AND (status = 'scheduled') IS TRUE
), c AS (
    UPDATE notifications n
       SET status = 'delivering', attempts = n.attempts + 1, updated_at = now()
     WHERE n.id = ANY($1::uuid[]) AND n.id {_SPAN}
       AND n.step = coalesce(($4::jsonb ->> n.id::text)::int, 0)
       AND (n.status IN ('queued', 'retrying')
            OR (n.status = 'scheduled' AND n.send_at <= now() + interval '1 second')
            OR (n.status = 'delivering' AND n.updated_at < now() - make_interval(secs => $3)))
           IS TRUE
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
 WHERE n.id = ANY($1::uuid[]) AND n.id {_SPAN}
   AND (n.status IN ('delivered', 'failed', 'cancelled', 'skipped')
        OR (n.status = 'scheduled' AND n.send_at > now() + interval '1 second')
        OR n.step <> coalesce(($4::jsonb ->> n.id::text)::int, 0)) IS TRUE
"""

_TOUCH = f"""
UPDATE notifications SET updated_at = now()
 WHERE id = ANY($1::uuid[]) AND id {_SPAN} AND (status = 'delivering') IS TRUE
"""

# The batch's outcomes come as one jsonb object (id -> [status, error, error_class, dead,
# stream, entry_id, provider, next_step, made, receipt_id, run]) that each row, found by its key,
# looks itself up in: no join of the batch with the table, which the planner made a nested loop
# rescanning the batch for every row (without statistics on a fresh table, and in the generic
# plan the statement cache turns to after five runs: 15 s for a batch of 5,000).
_O = "($2::jsonb -> n.id::text)"

# One statement per acker batch: the status (only rows still 'delivering' move, so recording
# twice changes nothing), an audit row, one attempt row per provider call, the dead letters, a
# task run's ``job_results`` row (``run``: [attempt, started_at, result, error_type,
# error_message, traceback, keep_s, final, result_bytes], or null when results are off; the
# result's JSON size is what a group's release sums, sql/017), and a receipt for
# each notification that ended for good whose tenant has an endpoint: created with the final
# status or not at all. A run's result is thus committed with its status, before its entry is
# acknowledged, in the batch's one round trip; the triggers that release a chain's children
# (sql/014) fire at the statement's end and read the results it wrote. The run's progress is
# kept when it failed (1 when it succeeded); a previous attempt's progress and note are not.
_RECORD = f"""
WITH u AS (
    UPDATE notifications n
       SET status = {_O} ->> 0,
           attempts = n.attempts - CASE WHEN ({_O} ->> 8)::bool THEN 0 ELSE 1 END,
           last_error = {_O} ->> 1,
           updated_at = now(),
           provider = coalesce({_O} ->> 6, n.provider),
           step = coalesce(({_O} ->> 7)::int, n.step),
           delivered_at = CASE WHEN {_O} ->> 0 = 'delivered' THEN now() ELSE n.delivered_at END,
           failed_at = CASE WHEN {_O} ->> 0 = 'failed' THEN now() ELSE n.failed_at END
     WHERE n.id = ANY($1::uuid[]) AND n.id {_SPAN} AND (n.status = 'delivering') IS TRUE
    RETURNING n.id, n.tenant_id, n.channel, n.recipient, n.fallback, n.step, n.provider,
              n.attempts, n.metadata, n.priority, n.created_at, n.delivered_at, n.failed_at,
              n.receipt_for, n.status, {_O} ->> 1 AS error, {_O} ->> 2 AS error_class,
              ({_O} ->> 3)::bool AS dead, {_O} ->> 4 AS stream, {_O} ->> 5 AS entry_id,
              ({_O} ->> 9)::uuid AS receipt_id, {_O} -> 10 AS run
), j AS (
    INSERT INTO job_results AS jr (job_id, tenant_id, attempt, started_at, result, result_bytes,
                                   error_type, error_message, traceback, progress, finished_at,
                                   expires_at)
    SELECT id, tenant_id, (run ->> 0)::int, (run ->> 1)::timestamptz, run -> 2,
           (run ->> 8)::int, run ->> 3, run ->> 4, run ->> 5,
           CASE WHEN run ->> 3 IS NULL THEN 1 END,
           CASE WHEN (run ->> 7)::bool THEN now() END,
           CASE WHEN (run ->> 7)::bool THEN now() + make_interval(secs => (run ->> 6)::float8) END
      FROM u WHERE jsonb_typeof(run) = 'array'
    ON CONFLICT (job_id) DO UPDATE
       SET attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at,
           result = EXCLUDED.result, result_bytes = EXCLUDED.result_bytes,
           error_type = EXCLUDED.error_type,
           error_message = EXCLUDED.error_message, traceback = EXCLUDED.traceback,
           progress = coalesce(EXCLUDED.progress,
                               CASE WHEN jr.attempt = EXCLUDED.attempt THEN jr.progress END),
           note = CASE WHEN jr.attempt = EXCLUDED.attempt THEN jr.note END,
           finished_at = EXCLUDED.finished_at, expires_at = EXCLUDED.expires_at
), a AS (
    INSERT INTO audit (notification_id, status, worker, detail)
    SELECT id, status, $14, error FROM u
), t AS (
    INSERT INTO attempts (notification_id, number, channel, provider, started_at, duration_ms,
                          outcome, error_class, error_message, provider_response,
                          provider_message_id, worker)
    SELECT t.*, $14 FROM unnest(
        $3::uuid[], $4::int[], $5::text[], $6::text[], $7::timestamptz[], $8::float8[],
        $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]
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
           u.priority, 'queued', $15, u.id
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
 WHERE id = ANY($1::uuid[]) AND (status IN ('queued', 'delivering', 'retrying')) IS TRUE
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
     WHERE id = ANY($1::uuid[]) AND (status IN ('queued', 'delivering', 'retrying')) IS TRUE
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
    run: RunRow | None = None  # a task's run whose result is kept


@dataclass(frozen=True, slots=True)
class RunRow:
    """How a task's run ended, for its ``job_results`` row (results kept): a JSON result or
    an error; once ``final`` (no retry follows) the job has finished and the row is kept for
    ``keep_s`` seconds."""

    attempt: int
    started_at: datetime
    result_json: bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    keep_s: float
    final: bool = True

    def encoded(self) -> tuple[object, ...]:
        """The row as the record statement reads it (the result as JSON, not a string)."""
        json = self.result_json
        return (
            self.attempt, self.started_at, None if json is None else msgspec.Raw(json),
            self.error_type, self.error_message, self.traceback, self.keep_s, self.final,
            None if json is None else len(json),
        )  # fmt: skip


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
    "status", "error", "error_class", "dead", "stream", "entry_id", "provider", "next_step",
    "made",
)  # fmt: skip
FINAL = frozenset({Status.DELIVERED, Status.FAILED, Status.SKIPPED})  # the ends receipts report
_ATTEMPT_FIELDS = (
    "notification_id", "number", "channel", "provider", "started_at", "duration_ms", "outcome",
    "error_class", "error", "response", "provider_message_id",
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
        # each with the id its receipt would take, if its tenant wants one (UUIDv7: in order)
        batch = {
            o.notification_id: [
                *(_storable(getattr(o, name)) for name in _OUTCOME_FIELDS),
                str(uuid7()) if o.status in FINAL else None,
                None if o.run is None else tuple(_storable(v) for v in o.run.encoded()),
            ]
            for o in outcomes
        }
        tries = [[_storable(getattr(a, name)) for a in attempts] for name in _ATTEMPT_FIELDS]
        rows = await self._pool.fetch(
            _RECORD,
            list(batch),
            storable_json(msgspec.json.encode(batch)).decode(),
            *tries,
            worker,
            receipt_max_attempts,
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


def _storable(value: object) -> object:
    """A text field with its NULs replaced (PostgreSQL refuses them); anything else as is."""
    return storable_text(value) if isinstance(value, str) else value
