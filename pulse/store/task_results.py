"""The worker's writes of a task's job: start, progress, result or error, and the registry.

One statement each. A result row is written before the acker records the status, so a crash
in between leaves the row to be overwritten by the re-run (tasks run at least once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import msgspec

_START = """
INSERT INTO job_results (job_id, tenant_id, attempt, started_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (job_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, started_at = now(), finished_at = NULL
"""

_PROGRESS = "UPDATE job_results SET progress = $2, note = $3 WHERE job_id = $1"

_FINISH = """
UPDATE job_results
   SET result = $2::jsonb, error_type = $3, error_message = $4, traceback = $5,
       finished_at = CASE WHEN $7 THEN now() END,
       progress = CASE WHEN $3::text IS NULL THEN 1 ELSE progress END,
       expires_at = CASE WHEN $7 THEN now() + make_interval(secs => $6) END
 WHERE job_id = $1
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


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run ended: a JSON result, or an error; once ``final`` (no retry follows), the
    job has finished and the row is kept for ``keep_s`` seconds."""

    result_json: bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    keep_s: float
    final: bool = True


class TaskResults:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start(self, job_id: str, tenant_id: str, attempt: int) -> None:
        await self._pool.execute(_START, job_id, tenant_id, attempt)

    async def progress(self, job_id: str, fraction: float, note: str | None) -> None:
        await self._pool.execute(_PROGRESS, job_id, fraction, note)

    async def finish(self, job_id: str, ending: Ending) -> None:
        result = None if ending.result_json is None else ending.result_json.decode()
        await self._pool.execute(
            _FINISH, job_id, result, ending.error_type, ending.error_message,
            ending.traceback, ending.keep_s, ending.final,
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
