"""The notification queue as a test looks at it, whatever lane a job waits in (a priority's
shared stream or its tenant's sub-stream, PULSE_TENANT_FAIRNESS): what waits, and Redis losing
it all. Tests assert on these (or on delivery and queue depth), never on one key's layout."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from pulse.core.models import MAX_PRIORITY, MIN_PRIORITY
from pulse.queue.codec import UndecodableMessage, decode_job
from pulse.queue.keys import QueueKeys
from pulse.queue.tenant_streams import TenantStreams


async def lanes(redis: Redis, keys: QueueKeys) -> list[tuple[int, str]]:
    """(priority, stream) of every notification lane that exists now."""
    active = await TenantStreams(redis, keys).active()
    shared = [(p, keys.stream(p)) for p in sorted(active)]
    return shared + [(p, keys.tenant_stream(p, t)) for p in sorted(active) for t in active[p]]


async def waiting(redis: Redis, keys: QueueKeys) -> dict[str, int]:
    """Job id -> priority of every notification entry in Redis, waiting or in flight (an entry
    that does not decode is named by its error)."""
    return {job_id: priority for job_id, (priority, _) in (await placed(redis, keys)).items()}


async def placed(redis: Redis, keys: QueueKeys) -> dict[str, tuple[int, str]]:
    """Job id -> (priority, the lane's stream) of every notification entry, read without
    taking it (XRANGE): what a producer appended, and where."""
    found: dict[str, tuple[int, str]] = {}
    for priority, stream in await lanes(redis, keys):
        entries: Any = await redis.xrange(stream)
        for _, fields in entries:
            try:
                found[decode_job(fields).id] = (priority, stream)
            except UndecodableMessage as exc:
                found[f"undecodable entry: {exc}"] = (priority, stream)
    return found


async def lose_everything(redis: Redis, keys: QueueKeys) -> None:
    """What a Redis restarted empty leaves of the queue: no lane, no tenants' sets, no index."""
    gone = [stream for _, stream in await lanes(redis, keys)]
    gone += [keys.tenants(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)]
    await redis.delete(*gone, keys.index())
