"""The worker's writes of a task's job besides its end: progress, a cancelled run, the
registry, the results' retention.

A run's end (result or error) is not written here: it rides in the acker's record statement
(``DeliveryLedger.record``, ``RunRow``), committed with the job's status in the batch's one round
trip, before the entry is acknowledged. A run writes nothing when it starts: ``started_at`` and
``attempt`` are written with its end, or with its first progress report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from pulse.core.storable import storable_text
from pulse.store.ledger import RunRow

# A late report (a timed-out thread's) never touches a row whose run has ended.
_PROGRESS = """
INSERT INTO job_results AS r (job_id, tenant_id, attempt, started_at, progress, note)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (job_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at,
       progress = EXCLUDED.progress, note = EXCLUDED.note
 WHERE r.finished_at IS NULL AND r.attempt <= EXCLUDED.attempt
"""

# A run cancelled on request: its row already says ``cancelled``, so the acker records nothing.
_CANCELLED = """
INSERT INTO job_results AS r (job_id, tenant_id, attempt, started_at, error_type, error_message,
                              traceback, finished_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now() + make_interval(secs => $8))
ON CONFLICT (job_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at, result = NULL,
       result_bytes = NULL,
       error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
       traceback = EXCLUDED.traceback, finished_at = EXCLUDED.finished_at,
       expires_at = EXCLUDED.expires_at
"""

_PUBLISH = """
INSERT INTO task_registry (name, schema, priority, max_attempts, worker)
SELECT * FROM unnest($1::text[], $2::jsonb[], $3::smallint[], $4::smallint[], $5::text[])
ON CONFLICT (name) DO UPDATE
   SET schema = EXCLUDED.schema, priority = EXCLUDED.priority,
       max_attempts = EXCLUDED.max_attempts, worker = EXCLUDED.worker, updated_at = now()
"""

# A batch at a time, oldest first, so a large backlog never holds one long transaction.
_SWEEP = """
DELETE FROM job_results WHERE job_id IN (
    SELECT job_id FROM job_results WHERE expires_at < now() ORDER BY expires_at LIMIT $1
)
"""


@dataclass(frozen=True, slots=True)
class Published:
    name: str
    schema: dict[str, object]
    priority: int
    max_attempts: int


class TaskResults:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def progress(
        self, job_id: str, tenant_id: str, attempt: int, started_at: datetime,
        fraction: float, note: str | None,
    ) -> None:  # fmt: skip
        await self._pool.execute(
            _PROGRESS, job_id, tenant_id, attempt, started_at, fraction, storable_text(note)
        )

    async def cancelled(self, job_id: str, tenant_id: str, run: RunRow) -> None:
        await self._pool.execute(
            _CANCELLED, job_id, tenant_id, run.attempt, run.started_at,
            storable_text(run.error_type), storable_text(run.error_message),
            storable_text(run.traceback), run.keep_s,
        )  # fmt: skip

    async def publish(self, tasks: Sequence[Published], worker: str) -> None:
        """Tell the API which tasks exist and how their arguments look."""
        if tasks:
            await self._pool.execute(
                _PUBLISH,
                [t.name for t in tasks],
                [msgspec.json.encode(t.schema).decode() for t in tasks],
                [t.priority for t in tasks],
                [t.max_attempts for t in tasks],
                [worker] * len(tasks),
            )

    async def sweep(self, batch: int) -> int:
        """Delete up to ``batch`` expired results; return how many went."""
        status: str = await self._pool.execute(_SWEEP, batch)
        return int(status.rsplit(" ", 1)[-1])
