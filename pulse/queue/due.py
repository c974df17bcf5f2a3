"""The due-time index of scheduled jobs: a sorted set per priority, messages in one hash.

Only an index: PostgreSQL's 'scheduled' rows are the truth, and the reconciler rebuilds what
Redis loses (``restore``). ``promote`` is the one move into the streams (``lua/promote.lua``).

Each partition (``QueueKeys.partition_keys``) has its own sets: a job waits in its partition's
and is promoted into that partition's streams, one slot per script call. Removal and lookups
by id alone ask every partition (a job's partition may follow its tenant, not its id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY, Job, JobKind
from pulse.queue.codec import MESSAGE_FIELD, UndecodableMessage, decode_job, encode_job
from pulse.queue.keys import CONSUMER_GROUP, QueueKeys
from pulse.queue.scripts import load_script

CHUNK = 500  # jobs per script call
TASK_SLOT = MAX_PRIORITY + 1  # a task's sorted set comes after the notifications' (schedule.lua)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Promoted:
    """What one promotion streamed (job id, due ms) and when the next job is due (ms)."""

    moved: list[tuple[str, int]]
    next_due_ms: int | None


def due_ms(due: datetime) -> int:
    """Milliseconds since the epoch, rounded up: a job is never streamed before its time."""
    micros = (due - EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


class DueIndex:
    def __init__(self, redis: Redis, keys: QueueKeys, *, fair: bool = False) -> None:
        """``fair``: a notification due is streamed to its tenant's sub-stream of its priority
        (as the publisher appends one accepted now, PULSE_TENANT_FAIRNESS)."""
        self._redis = redis
        self._keys = keys
        self._fair = fair
        self._schedule = load_script(redis, "schedule")
        self._promote = load_script(redis, "promote")
        self._unschedule = load_script(redis, "unschedule")

    async def schedule(self, jobs: Sequence[tuple[Job, datetime]]) -> None:
        """Index ``jobs`` by due time (again, for a rescheduled one: its due time moves)."""
        await self._index("set", jobs)

    async def restore(self, jobs: Sequence[tuple[Job, datetime]]) -> list[str]:
        """Index the jobs no stream holds (the reconciler); return those it indexed. A job
        another partition holds (scheduled or streamed there: a retiring one, which the
        script's look at the job's own partition misses) is left where it is."""
        elsewhere = await self._held_elsewhere(jobs)
        return await self._index("restore", [p for p in jobs if p[0].id not in elsewhere])

    async def _held_elsewhere(self, jobs: Sequence[tuple[Job, datetime]]) -> set[str]:
        """The ids of ``jobs`` that a partition other than their own holds, scheduled or in
        a stream. Read before the script (another slot); a job that leaves such a partition
        meanwhile was promoted or sent from there, so leaving it alone is right."""
        looks: list[tuple[str, str]] = []  # (job id, key)
        for job, _ in jobs:
            own = self._keys.of_job(job).partition
            for part in self._keys.partition_keys():
                if part.partition != own:
                    looks += [(job.id, part.scheduled_jobs()), (job.id, part.index())]
        if not looks:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, key in looks:
                pipe.hexists(key, job_id)
            found = await pipe.execute()
        return {job_id for (job_id, _), held in zip(looks, found, strict=True) if held}

    async def _index(self, mode: str, jobs: Sequence[tuple[Job, datetime]]) -> list[str]:
        added: list[str] = []
        for partition, its_jobs in _by_partition(self._keys, jobs).items():
            added += await self._index_in(partition, mode, its_jobs)
        return added

    async def _index_in(
        self, partition: QueueKeys, mode: str, jobs: Sequence[tuple[Job, datetime]]
    ) -> list[str]:
        keys = [partition.scheduled_jobs(), partition.index(), *_sets(partition)]
        added: list[str] = []
        for start in range(0, len(jobs), CHUNK):
            args: list[bytes | str | int] = [mode]
            for job, due in jobs[start : start + CHUNK]:
                message = encode_job(job)[MESSAGE_FIELD]
                slot = job.priority + (TASK_SLOT if job.kind is JobKind.TASK else 0)
                args += [job.id, slot, due_ms(due), message]
            ids = await self._schedule(keys=keys, args=args)
            added += [_text(job_id) for job_id in ids]
        return added

    async def promote(self, now_ms: int, limit: int) -> Promoted:
        """Stream at most ``limit`` jobs due by ``now_ms`` per partition (atomically: once
        each); the next due time is the soonest of any partition's."""
        moved: list[tuple[str, int]] = []
        next_due: list[int] = []
        for partition in self._keys.partition_keys():
            promoted = await self._promote_in(partition, now_ms, limit)
            moved += promoted.moved
            if promoted.next_due_ms is not None:
                next_due.append(promoted.next_due_ms)
        return Promoted(moved, min(next_due, default=None))

    async def _promote_in(self, partition: QueueKeys, now_ms: int, limit: int) -> Promoted:
        sets, streams, tenant_sets = [], [], []
        for priority, notifications, tasks, stream, task_stream in zip(
            range(MIN_PRIORITY, MAX_PRIORITY + 1),
            partition.all_scheduled(),
            partition.all_task_scheduled(),
            partition.streams(),
            partition.task_streams(),
            strict=True,
        ):  # by priority, a notification's before a task's of the same level
            sets += [notifications, tasks]
            streams += [stream, task_stream]
            tenant_sets += [partition.tenants(priority)] * 2
        routes, lanes = await self._routes(partition, now_ms, limit) if self._fair else ([], [])
        keys = [
            partition.scheduled_jobs(), partition.index(), partition.wake(),
            *sets, *streams, *tenant_sets, *lanes,
        ]  # fmt: skip
        args = [now_ms, limit, len(sets), CONSUMER_GROUP, *routes]
        reply = await self._promote(keys=keys, args=args)
        head, rest = int(reply[0]), reply[1:]
        moved = [(_text(rest[i]), int(float(rest[i + 1]))) for i in range(0, len(rest), 2)]
        return Promoted(moved, None if head < 0 else head)

    async def _routes(
        self, partition: QueueKeys, now_ms: int, limit: int
    ) -> tuple[list[str | int], list[str]]:
        """The notifications due by ``now_ms`` routed to their tenants' sub-streams: the
        script's triples (job id, tenant, lane number) and the lanes. Read before the script
        because Redis Cluster wants every key a script touches named up front; a job due but
        not seen here (scheduled meanwhile) goes to its priority stream, still served."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for scheduled in partition.all_scheduled():
                pipe.zrangebyscore(scheduled, "-inf", now_ms, start=0, num=limit)
            replies = await pipe.execute()
        due = [
            (priority, _text(member))
            for priority, members in zip(
                range(MIN_PRIORITY, MAX_PRIORITY + 1), replies, strict=True
            )
            for member in members
        ][:limit]
        if not due:
            return [], []
        messages = await self._redis.hmget(partition.scheduled_jobs(), [i for _, i in due])
        routes: list[str | int] = []
        lanes: dict[str, int] = {}
        for (priority, job_id), message in zip(due, messages, strict=True):
            if not isinstance(message, bytes):
                continue  # gone meanwhile: the script drops it
            try:
                tenant = decode_job({MESSAGE_FIELD: message}).tenant_id
            except UndecodableMessage:
                continue  # streamed to its priority stream: the worker dead-letters it there
            lane = partition.tenant_stream(priority, tenant)
            routes += [job_id, tenant, lanes.setdefault(lane, len(lanes) + 1)]
        return routes, list(lanes)

    async def remove(self, job_id: str, priority: int, *, task: bool = False) -> bool:
        """Forget a cancelled job (memory only: the claim never sends a cancelled one)."""
        removed = False
        for partition in self._keys.partition_keys():
            scheduled = partition.task_scheduled if task else partition.scheduled
            keys = [partition.scheduled_jobs(), scheduled(priority)]
            removed = bool(await self._unschedule(keys=keys, args=[job_id])) or removed
        return removed

    async def due_of(self, job_id: str, priority: int, *, task: bool = False) -> int | None:
        """The job's due time in the index (ms), or None when it is not there."""
        for partition in self._keys.partition_keys():
            scheduled = partition.task_scheduled if task else partition.scheduled
            score = await self._redis.zscore(scheduled(priority), job_id)
            if score is not None:
                return int(score)
        return None


def _sets(keys: QueueKeys) -> list[str]:
    return keys.all_scheduled() + keys.all_task_scheduled()


def _by_partition(
    keys: QueueKeys, jobs: Sequence[tuple[Job, datetime]]
) -> dict[QueueKeys, list[tuple[Job, datetime]]]:
    grouped: dict[QueueKeys, list[tuple[Job, datetime]]] = {}
    for job, due in jobs:
        grouped.setdefault(keys.of_job(job), []).append((job, due))
    return grouped


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
