"""Reading and steering a tenant's notifications: list with filters, attempts, cancel."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from pulse.core.documents import AttemptsDocument, NotificationList
from pulse.core.errors import InvalidInput, NotFound
from pulse.core.models import TASK_PREFIX, PriorityLevel, Status
from pulse.core.views import NotificationView
from pulse.http.auth import require
from pulse.http.decoding import check_query, decode_query
from pulse.http.notifications import parse_id
from pulse.http.responses import json_response
from pulse.http.state import (
    DUE_INDEX,
    KEY_ID,
    METRICS,
    NOTIFICATIONS,
    POOL,
    SETTINGS,
    TENANT_ID,
)
from pulse.queue.due import DueIndex
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.store.batch_items import unexpanded_item
from pulse.store.notifications import NotificationFilter

logger = logging.getLogger("pulse.http.notification_queries")
routes = web.RouteTableDef()
METADATA_PREFIX = "metadata."


class ListQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: Status | None = None
    channel: str | None = None
    recipient: str | None = None
    priority: PriorityLevel | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    due_after: datetime | None = None  # scheduled ones by due time (send_at)
    due_before: datetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1)] = 50
    cursor: str | None = None


@routes.get("/api/notifications")
@routes.get("/api/notifications/")
async def list_notifications(request: web.Request) -> web.Response:
    """Newest first. Filters: status, channel, recipient, priority, created_after,
    created_before, due_after, due_before (``send_at`` in ``[after, before)``), and
    ``metadata.KEY=VALUE`` for each metadata pair to match."""
    require(request, "read")
    check_query(request.query)
    params = {k: v for k, v in request.query.items() if not k.startswith(METADATA_PREFIX)}
    metadata = {
        k[len(METADATA_PREFIX) :]: v
        for k, v in request.query.items()
        if k.startswith(METADATA_PREFIX)
    }
    query = decode_query(params, ListQuery)
    limit = min(query.limit, request.app[SETTINGS].max_list_limit)
    cursor = None if query.cursor is None else _cursor(query.cursor)
    where = NotificationFilter(
        status=query.status,
        channel=query.channel,
        recipient=query.recipient,
        priority=query.priority,
        created_after=query.created_after,
        created_before=query.created_before,
        metadata=metadata or None,
        due_after=query.due_after,
        due_before=query.due_before,
    )
    items = await request.app[NOTIFICATIONS].search(request[TENANT_ID], where, cursor, limit)
    next_cursor = items[-1].id if len(items) == limit else None
    return json_response(NotificationList(items=items, next_cursor=next_cursor))


@routes.get("/api/notifications/{id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    require(request, "read")
    notification_id = parse_id(request.match_info["id"])
    store = request.app[NOTIFICATIONS]
    view = await store.get(request[TENANT_ID], notification_id)
    if view is None:  # an item of a batch not yet fanned out: no attempts yet
        item = await unexpanded_item(request.app[POOL], request[TENANT_ID], notification_id)
        if item is None:
            raise NotFound(f"no notification {notification_id}")
        document = AttemptsDocument(id=notification_id, attempts=[], history=item.history)
        return json_response(document)
    if view.channel.startswith(TASK_PREFIX):  # a task: /api/jobs/{id}
        raise NotFound(f"no notification {notification_id}")
    attempts = await store.attempts(notification_id)
    history = await store.history(request[TENANT_ID], notification_id)
    return json_response(AttemptsDocument(id=notification_id, attempts=attempts, history=history))


@routes.post("/api/notifications/{id}/cancel")
async def cancel_notification(request: web.Request) -> web.Response:
    """Queued, scheduled or retrying: cancelled for good (workers acknowledge its entry without
    sending). Delivering or finished: 409, with the current status."""
    require(request, "send")
    notification_id = parse_id(request.match_info["id"])
    store = request.app[NOTIFICATIONS]
    by = f"cancelled by key {request[KEY_ID]}"
    before, cancelled = await store.cancel(request[TENANT_ID], notification_id, by)
    if before is None:
        await refuse_unexpanded(request, notification_id)
        raise NotFound(f"no notification {notification_id}")
    if not cancelled and before != Status.CANCELLED:
        raise web.HTTPConflict(text=f"a notification that is {before} cannot be cancelled")
    view = await store.get(request[TENANT_ID], notification_id)
    if cancelled and view is not None:
        request.app[METRICS].count_cancelled(view.channel, view.priority)
        if before == Status.SCHEDULED:
            await forget_scheduled(request.app[DUE_INDEX], view)
    return json_response(view)


async def refuse_unexpanded(request: web.Request, notification_id: str) -> None:
    """An item of a batch no worker has fanned out yet exists but has no row to change: 409
    with Retry-After (a moment later it has one), never a 404 or a change the fan-out undoes."""
    if await unexpanded_item(request.app[POOL], request[TENANT_ID], notification_id):
        raise web.HTTPConflict(
            text="this batch item is not fanned out by a worker yet; retry shortly",
            headers={"Retry-After": "1"},
        )


async def forget_scheduled(index: DueIndex, view: NotificationView) -> None:
    """Take a cancelled one out of the due-time index: memory only, so a Redis failure is no
    error (should it be streamed anyway, the claim acknowledges it without sending)."""
    try:
        await index.remove(view.id, view.priority)
    except TRANSIENT_REDIS_ERRORS as exc:
        logger.warning("cancelled %s; its due-time entry stays until due (%s)", view.id, exc)


def _cursor(raw: str) -> str:
    try:
        return parse_id(raw)
    except NotFound:
        raise InvalidInput("cursor is not one this API gave out", "$.cursor") from None
