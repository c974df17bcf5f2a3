"""Every Redis key name Pulse uses, built here and nowhere else.

The queue is split into ``partitions`` (``PULSE_REDIS_PARTITIONS``, default 1): each is a
complete set of queue keys (priority streams, retry and due-time sets, index, dead letters)
under its own hash tag, so on a Redis Cluster the partitions spread over slots and nodes while
every Lua script still touches one slot. Partition 0's tag is ``{prefix}`` (a one-partition
deployment has exactly the keys it always had), partition ``i`` uses ``{prefix#i}`` (``#`` is
not allowed in a prefix, so no other prefix collides). A job's partition is a stable hash of its
id, or of its tenant id when the deployment asks for per-tenant ordering; everything about the
job afterwards is named from its stream (``of_key``), never recomputed.

Redis remembers the highest count in use (``partition_count``, raised by every process at
start): a process configured with fewer serves the partitions above its count as retiring
(``serving``): read, reclaimed, retried and promoted like the others, never appended to
(``of_job`` picks among the configured count only), and removed once empty
(``pulse.runtime.retirement``).

Cross-partition state (worker heartbeats, locks, ingress limits, provider buckets, recipient
caps, task slots, pub/sub channels) stays under ``{prefix}``, whatever partition's
``QueueKeys`` names it. A different prefix gives a fully separate Pulse (tests use a random one
per run).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY, Job, JobKind

if TYPE_CHECKING:
    from pulse.config import Settings

CONSUMER_GROUP = "pulse-workers"
PARTITION_MARK = "#"


def keys_for(settings: Settings) -> QueueKeys:
    """The keys of a deployment's partition 0 (the others: ``partition_keys``)."""
    return QueueKeys(
        settings.key_prefix,
        partitions=settings.redis_partitions,
        by_tenant=settings.redis_partition_by == "tenant",
    )


@dataclass(frozen=True, slots=True)
class QueueKeys:
    prefix: str = "pulse"
    partition: int = 0
    partitions: int = 1
    by_tenant: bool = False  # a tenant's jobs share one partition (per-tenant ordering)
    serving: int = 0  # partitions read (the remembered count), when above ``partitions``

    def __post_init__(self) -> None:
        if not 0 <= self.partition < self.span:
            raise ValueError(f"partition {self.partition} outside 0..{self.span - 1}")

    @property
    def span(self) -> int:
        """How many partitions are read: the configured ones and the retiring ones."""
        return max(self.partitions, self.serving)

    @property
    def retiring(self) -> bool:
        """Whether this partition is above the configured count: read, never appended to."""
        return self.partition >= self.partitions

    def serving_up_to(self, count: int) -> QueueKeys:
        """The same keys, reading ``count`` partitions (the remembered count) when it is more."""
        return QueueKeys(self.prefix, self.partition, self.partitions, self.by_tenant, count)

    @property
    def tag(self) -> str:
        """This partition's hash tag."""
        if self.partition == 0:
            return self.home_tag
        return "{" + f"{self.prefix}{PARTITION_MARK}{self.partition}" + "}"

    @property
    def home_tag(self) -> str:
        """The tag of cross-partition state (and of partition 0)."""
        return "{" + self.prefix + "}"

    def part(self, partition: int) -> QueueKeys:
        """The keys of another partition of the same deployment."""
        if partition == self.partition:
            return self
        return QueueKeys(self.prefix, partition, self.partitions, self.by_tenant, self.serving)

    def partition_keys(self) -> list[QueueKeys]:
        """Every partition's keys that is read (retiring ones too), partition 0 first."""
        return [self.part(i) for i in range(self.span)]

    def retiring_keys(self) -> list[QueueKeys]:
        """The partitions read but no longer appended to, lowest first."""
        return [self.part(i) for i in range(self.partitions, self.span)]

    def of_job(self, job: Job) -> QueueKeys:
        """The partition a new job is appended to: a stable hash of its id (or tenant id),
        among the configured partitions only (never a retiring one)."""
        if self.partitions == 1:
            return self.part(0)
        return self.part(self.partition_of(job.tenant_id if self.by_tenant else job.id))

    def partition_of(self, spread: str) -> int:
        """The partition of a job whose id (or tenant id) is ``spread``."""
        return zlib.crc32(spread.encode()) % self.partitions

    def of_key(self, key: str) -> QueueKeys:
        """The partition whose tag ``key`` (a stream of this deployment) is under."""
        if self.span == 1 or not key.startswith("{"):
            return self.part(0)
        tag = key[1 : key.find("}")]
        _, mark, number = tag.rpartition(PARTITION_MARK)
        if mark and number.isdigit() and int(number) < self.span:
            return self.part(int(number))
        return self.part(0)

    def stream(self, priority: int) -> str:
        """The stream of one priority level; lower levels are more urgent."""
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority {priority} outside {MIN_PRIORITY}..{MAX_PRIORITY}")
        return f"{self.tag}:stream:{priority}"

    def tenant_stream(self, priority: int, tenant_id: str) -> str:
        """One tenant's sub-stream of a priority: its notifications wait apart from other
        tenants', so the fetcher can serve tenants by weighted fair share."""
        return f"{self.stream(priority)}:t:{tenant_id}"

    def tenants(self, priority: int) -> str:
        """The set of tenant ids whose sub-stream of ``priority`` exists (has entries waiting
        or in flight); kept with the appends (enqueue_tenant.lua, retire_tenant.lua)."""
        return f"{self.stream(priority)}:tenants"

    def wake(self) -> str:
        """A stream whose entries only wake a blocked fetcher: a tenant's first append to a
        priority (a sub-stream no fetcher is blocked on yet) adds one."""
        return f"{self.tag}:stream:wake"

    def streams(self) -> list[str]:
        """All priority streams, most urgent first."""
        return [self.stream(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def task_stream(self, priority: int) -> str:
        """The stream of one priority level of user tasks: read only by workers started with
        ``--tasks``, so a worker that serves channels alone never takes a task."""
        self.stream(priority)  # the same range check
        return f"{self.tag}:tasks:{priority}"

    def task_streams(self) -> list[str]:
        return [self.task_stream(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def stream_of(self, job: Job) -> str:
        """Where ``job`` is appended: a task's stream or a notification's."""
        if job.kind is JobKind.TASK:
            return self.task_stream(job.priority)
        return self.stream(job.priority)

    @staticmethod
    def retry_schedule_of(stream: str) -> str:
        """Entry ids of ``stream`` waiting for another attempt, scored by due time (ms); any
        partition's stream (named from it: under its tag)."""
        return f"{stream}:retry"

    def scheduled(self, priority: int) -> str:
        """Job ids of one priority waiting for their due time, scored by it (ms): an index of
        PostgreSQL's 'scheduled' rows, rebuilt by the reconciler when lost."""
        return f"{self.stream(priority)}:scheduled"

    def all_scheduled(self) -> list[str]:
        return [self.scheduled(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def task_scheduled(self, priority: int) -> str:
        """Deferred task jobs of one priority, scored by due time (ms): promoted into the
        task stream of that priority, never into a notification stream."""
        return f"{self.task_stream(priority)}:scheduled"

    def all_task_scheduled(self) -> list[str]:
        return [self.task_scheduled(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]

    def scheduled_of(self, job: Job) -> str:
        """The due-time set ``job`` waits in (a task's or a notification's)."""
        if job.kind is JobKind.TASK:
            return self.task_scheduled(job.priority)
        return self.scheduled(job.priority)

    def scheduled_jobs(self) -> str:
        """Job id -> its encoded stream message, for every job in a scheduled set."""
        return f"{self.tag}:scheduled:jobs"

    def dead_letters(self) -> str:
        return f"{self.tag}:dead"

    def index(self) -> str:
        """Job id -> "<stream> <entry id>" for every job in a stream (the reconciler's view)."""
        return f"{self.tag}:index"

    def partition_count(self) -> str:
        """The highest partition count in use (remember_partitions.lua, lower_partitions.lua):
        every partition below it may hold work."""
        return f"{self.home_tag}:partitions"

    def partition_counts(self) -> str:
        """ "<count>:<process>" scored by when that process was last seen (ms): the partition
        counts of the processes running now (live_partitions.lua); none above a retiring
        partition may be alive when it is removed."""
        return f"{self.home_tag}:partition-counts"

    def workers(self) -> str:
        """Worker name -> its last heartbeat (JSON): who is alive and what it is doing."""
        return f"{self.home_tag}:workers"

    def workers_seen(self) -> str:
        """Worker name scored by its last heartbeat (ms): how stale heartbeats are pruned."""
        return f"{self.home_tag}:workers:seen"

    def job_cancels(self) -> str:
        """Pub/sub channel: ids of running tasks cancelled on request."""
        return f"{self.home_tag}:job-cancels"

    def task_slots(self, task: str) -> str:
        """Holders of a task's fleet-wide slots (token scored by lease end, ms)."""
        return f"{self.home_tag}:slots:{task}"

    def lock(self, name: str) -> str:
        return f"{self.home_tag}:lock:{name}"

    def rate_limit(self, scope: str, ident: str) -> str:
        """One ingress limit's state (gcra.lua): ``scope`` tenant or key, ``ident`` its id."""
        return f"{self.home_tag}:limit:{scope}:{ident}"

    def provider_bucket(self, provider: str) -> str:
        """A provider account's token bucket (throttle.lua), shared by every worker."""
        return f"{self.home_tag}:bucket:{provider}"

    def recipient_window(self, tenant_id: str, channel: str, recipient_digest: str) -> str:
        """Deliveries counted against one recipient's cap (recipient_cap.lua); the recipient
        appears only as a digest."""
        return f"{self.home_tag}:cap:{tenant_id}:{channel}:{recipient_digest}"

    def all_keys(self) -> list[str]:
        streams = self.streams() + self.task_streams()
        schedules = [self.retry_schedule_of(s) for s in streams]
        extra = [self.dead_letters(), self.index(), self.workers(), self.workers_seen()]
        scheduled = self.all_scheduled() + self.all_task_scheduled()
        return [*streams, *schedules, *scheduled, self.scheduled_jobs(), *extra]
