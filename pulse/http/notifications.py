"""``/api/notifications``: accept (202 after commit, Idempotency-Key aware) and read back."""

from __future__ import annotations

import uuid

import msgspec
from aiohttp import web

from pulse.core.documents import NotificationDocument
from pulse.core.errors import NotFound
from pulse.core.ids import uuid7
from pulse.core.models import TASK_PREFIX, Job, JobKind
from pulse.core.timeutil import utcnow
from pulse.http.admission import admit_or_replay
from pulse.http.auth import require
from pulse.http.body import read_body
from pulse.http.idempotency import idempotency_key, render
from pulse.http.state import ACCEPT, NOTIFICATIONS, POOL, SETTINGS, SPECS, TENANT_ID
from pulse.http.validation import CheckedNotification, decode_request
from pulse.store.batch_items import unexpanded_item

JSON_TYPES = frozenset({"application/json"})
routes = web.RouteTableDef()


@routes.post("/api/notifications")
@routes.post("/api/notifications/")
async def create_notification(request: web.Request) -> web.StreamResponse:
    if request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")
    require(request, "send")
    settings = request.app[SETTINGS]
    body = await read_body(request)
    checked = decode_request(body, request.app[SPECS], settings.max_payload_depth)
    due = checked.due(utcnow(), settings.max_schedule_ahead_s)  # None: at once
    key = idempotency_key(request, checked.request)
    metadata = checked.request.metadata
    limited = await admit_or_replay(request, 1, key)
    if isinstance(limited, web.Response):
        return limited
    when = (checked.request.send_at, due)
    job = _job(request, checked)
    answer = render(await request.app[ACCEPT].notification(job, metadata, key, when))
    answer.headers.update(limited)
    return answer


@routes.get("/api/notifications/{id}")
async def get_notification(request: web.Request) -> web.Response:
    require(request, "read")
    notification_id = parse_id(request.match_info["id"])
    tenant_id = request[TENANT_ID]
    store = request.app[NOTIFICATIONS]
    view = await store.get(tenant_id, notification_id)
    if view is None:  # an item of a batch not yet fanned out answers from the batch
        item = await unexpanded_item(request.app[POOL], tenant_id, notification_id)
        if item is None:
            raise NotFound(f"no notification {notification_id}")
        view, history = item.view, item.history
    elif view.channel.startswith(TASK_PREFIX):  # a task: /api/jobs/{id}
        raise NotFound(f"no notification {notification_id}")
    else:
        history = await store.history(tenant_id, notification_id)
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


def parse_id(raw: str) -> str:
    """A notification id; anything that is not a UUID cannot exist, so it is a 404."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no notification {raw}") from None
