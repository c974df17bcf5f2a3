"""``/api/notifications``: accept (202 after commit, Idempotency-Key aware) and read back."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import msgspec
from aiohttp import web

from pulse.core.documents import Accepted, NotificationDocument
from pulse.core.errors import NotFound, Unavailable
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind, Status
from pulse.http.auth import require
from pulse.http.idempotency import Remember, answer, idempotent_start, remember_answer
from pulse.http.state import METRICS, NOTIFICATIONS, PUBLISHER, SETTINGS, SPECS, TENANT_ID
from pulse.http.validation import CheckedNotification, decode_request
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.store.errors import TRANSIENT_DB_ERRORS
from pulse.store.notifications import NewNotification

logger = logging.getLogger("pulse.http.notifications")
JSON_TYPES = frozenset({"application/json"})
routes = web.RouteTableDef()


@routes.post("/api/notifications")
@routes.post("/api/notifications/")
async def create_notification(request: web.Request) -> web.StreamResponse:
    if request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")
    require(request, "send")
    settings = request.app[SETTINGS]
    body = await request.read()
    if len(body) > settings.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=settings.max_body_bytes, actual_size=len(body))
    checked = decode_request(body, request.app[SPECS], settings.max_payload_depth)
    started = await idempotent_start(request, msgspec.json.encode(checked.request))
    if isinstance(started, web.StreamResponse):
        return started  # a replay, or a conflict
    job = _job(request, checked)
    location = f"/api/notifications/{job.id}"

    def render(created_at: datetime) -> bytes:
        body = Accepted(
            id=job.id,
            status=Status.QUEUED,
            channel=job.channel,
            priority=job.priority,
            created_at=created_at.isoformat(),
        )
        return msgspec.json.encode(body)

    try:
        created_at = await _commit(
            request, job, checked, remember_answer(started, render, location)
        )
        await _enqueue(request, job)
    except BaseException:
        if started is not None:
            await started.release()
        raise
    request.app[METRICS].count_accepted([(job.channel, job.priority)])
    return answer(202, render(created_at), location)


@routes.get("/api/notifications/{id}")
async def get_notification(request: web.Request) -> web.Response:
    require(request, "read")
    notification_id = parse_id(request.match_info["id"])
    tenant_id = request[TENANT_ID]
    store = request.app[NOTIFICATIONS]
    try:
        view = await store.get(tenant_id, notification_id)
        history = await store.history(tenant_id, notification_id) if view else []
    except TRANSIENT_DB_ERRORS:
        raise Unavailable("the database is unreachable; retry shortly") from None
    if view is None:
        raise NotFound(f"no notification {notification_id}")
    document = NotificationDocument(**msgspec.structs.asdict(view), history=history)
    return web.Response(body=msgspec.json.encode(document), content_type="application/json")


def _job(request: web.Request, checked: CheckedNotification) -> Job:
    default_attempts = request.app[SETTINGS].default_max_attempts
    req = checked.request
    return Job(
        id=str(uuid7()),
        tenant_id=request[TENANT_ID],
        kind=JobKind.NOTIFICATION,
        channel=req.channel,
        recipient=checked.recipient,
        payload=req.payload,
        priority=req.priority,
        max_attempts=req.max_attempts or default_attempts,
        fallback=checked.fallback,
    )


async def _commit(
    request: web.Request, job: Job, checked: CheckedNotification, remember: Remember | None
) -> datetime:
    new = NewNotification(
        id=job.id,
        tenant_id=job.tenant_id,
        channel=job.channel,
        recipient=job.recipient,
        payload_json=msgspec.json.encode(job.payload),
        priority=job.priority,
        max_attempts=job.max_attempts,
        metadata_json=msgspec.json.encode(checked.request.metadata or {}),
        fallback_json=msgspec.json.encode(job.fallback),
    )
    try:
        return await request.app[NOTIFICATIONS].insert(new, remember)
    except TRANSIENT_DB_ERRORS:
        raise Unavailable("the database is unreachable; nothing was accepted") from None


async def _enqueue(request: web.Request, job: Job) -> None:
    """Stream the committed job. If Redis is down, take the commit back and answer 503, so the
    client's retry is the only copy; should the take-back fail too, the reconciler enqueues
    the committed job later (it is never lost, at worst sent once more on the client's retry)."""
    try:
        await request.app[PUBLISHER].publish([job])
    except TRANSIENT_REDIS_ERRORS as exc:
        logger.warning("Redis unreachable for %s (%s); withdrawing it", job.id, exc)
        try:
            await request.app[NOTIFICATIONS].withdraw(job.id)
        except TRANSIENT_DB_ERRORS:
            logger.error("could not withdraw %s; the reconciler will enqueue it", job.id)
        raise Unavailable("the queue is unreachable; nothing was accepted") from None


def parse_id(raw: str) -> str:
    """A notification id; anything that is not a UUID cannot exist, so it is a 404."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no notification {raw}") from None
