"""The worker's writes of a task's job: its start, progress, result or error, and the registry.

Starts and ends are group-committed: the writes of every run that starts (or ends) in the same
event-loop tick go to PostgreSQL as one statement, each caller answered when it is committed,
so a worker running many short tasks pays a round trip per tick, not per task. A result is
committed before the acker records the status, so a reader told the job ended finds it; a crash
in between leaves the row to be overwritten by the re-run (tasks run at least once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

_START = """
INSERT INTO job_results (job_id, tenant_id, attempt, started_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[])
ON CONFLICT (job_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at, finished_at = NULL,
       expires_at = NULL, progress = NULL, note = NULL
"""

_PROGRESS = "UPDATE job_results SET progress = $2, note = $3 WHERE job_id = $1"

# A retried run is not finished: no finished_at, no expiry (``final`` false).
_FINISH = """
UPDATE job_results r
   SET result = f.result, error_type = f.error_type, error_message = f.error_message,
       traceback = f.traceback,
       finished_at = CASE WHEN f.final THEN now() END,
       progress = CASE WHEN f.error_type IS NULL THEN 1 ELSE r.progress END,
       expires_at = CASE WHEN f.final THEN now() + make_interval(secs => f.keep_s) END
  FROM unnest($1::uuid[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::float8[],
              $7::bool[]) AS f(job_id, result, error_type, error_message, traceback, keep_s, final)
 WHERE r.job_id = f.job_id
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


Waiting = tuple[tuple[Any, ...], "asyncio.Future[None]"]


class GroupCommit:
    """One statement for every row added in the same event-loop tick (rows are tuples of the
    statement's array parameters; the first element is the job id, the last row of a job
    wins)."""

    def __init__(self, pool: asyncpg.Pool, statement: str) -> None:
        self._pool = pool
        self._statement = statement
        self._waiting: list[Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def add(self, row: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((row, future))
        await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._commit(batch))
        self._flushes.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._flushes.discard)

    async def _commit(self, batch: list[Waiting]) -> None:
        rows = list({row[0]: row for row, _ in batch}.values())
        try:
            await self._pool.execute(
                self._statement, *(list(column) for column in zip(*rows, strict=True))
            )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class TaskResults:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._starts = GroupCommit(pool, _START)
        self._finishes = GroupCommit(pool, _FINISH)

    async def start(self, job_id: str, tenant_id: str, attempt: int, started_at: Any) -> None:
        await self._starts.add((job_id, tenant_id, attempt, started_at))

    async def progress(self, job_id: str, fraction: float, note: str | None) -> None:
        await self._pool.execute(_PROGRESS, job_id, fraction, note)

    async def finish(self, job_id: str, ending: Ending) -> None:
        result = None if ending.result_json is None else ending.result_json.decode()
        await self._finishes.add(
            (job_id, result, ending.error_type, ending.error_message, ending.traceback,
             ending.keep_s, ending.final)
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
