"""``PATCH /api/notifications/{id}``: a scheduled notification's new due time.

PostgreSQL first (only a row still 'scheduled' moves: otherwise 409 with its status), then the
due-time index. Should Redis fail in between, the change stands (PostgreSQL is the truth) and
the reconciler corrects the index: an entry streamed at the old time is refused by the claim.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, NotFound
from pulse.core.models import TASK_PREFIX
from pulse.core.schedule import Delay, DeliveryWindow, RequestedTime, due_time
from pulse.core.timeutil import utcnow
from pulse.http.auth import require
from pulse.http.body import read_body
from pulse.http.decoding import decode_json
from pulse.http.notification_queries import refuse_unexpanded
from pulse.http.notifications import parse_id
from pulse.http.responses import json_response
from pulse.http.state import DUE_INDEX, KEY_ID, NOTIFICATIONS, SCHEDULED, SETTINGS, TENANT_ID
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS

logger = logging.getLogger("pulse.http.scheduling")
PATCH_TYPES = frozenset({"application/json", "application/merge-patch+json"})
routes = web.RouteTableDef()


class RescheduleRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The new time, as on a new notification: ``send_at`` or ``delay_s`` (from now), and
    optionally quiet hours; a time now or past sends it at once."""

    send_at: RequestedTime | None = None
    delay_s: Delay | None = None
    deliver_in_window: DeliveryWindow | None = None


@routes.patch("/api/notifications/{id}")
async def reschedule_notification(request: web.Request) -> web.Response:
    require(request, "send")
    if request.content_type not in PATCH_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")
    notification_id = parse_id(request.match_info["id"])
    change = decode_json(await read_body(request), RescheduleRequest)
    if change.send_at is None and change.delay_s is None and change.deliver_in_window is None:
        raise InvalidInput("send 'send_at' or 'delay_s' (or 'deliver_in_window')", "$.send_at")
    now = utcnow()
    max_ahead_s = request.app[SETTINGS].max_schedule_ahead_s
    due = due_time(
        now, change.send_at, change.delay_s, change.deliver_in_window, max_ahead_s
    )  # fmt: skip
    by = f"rescheduled by key {request[KEY_ID]}"
    tenant_id = request[TENANT_ID]
    moved = await request.app[SCHEDULED].reschedule(tenant_id, notification_id, due or now, by)
    if moved is None:
        view = await request.app[NOTIFICATIONS].get(tenant_id, notification_id)
        if view is None:
            await refuse_unexpanded(request, notification_id)
        if view is None or view.channel.startswith(TASK_PREFIX):  # a task: /api/jobs/{id}
            raise NotFound(f"no notification {notification_id}")
        raise web.HTTPConflict(text=f"a notification that is {view.status} cannot be rescheduled")
    job, view = moved
    try:
        await request.app[DUE_INDEX].schedule([(job, due or now)])
    except TRANSIENT_REDIS_ERRORS as exc:
        logger.warning("rescheduled %s; the reconciler will index it (%s)", job.id, exc)
    return json_response(view)
