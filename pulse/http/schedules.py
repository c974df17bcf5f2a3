"""``/api/schedules``: cron schedules that create a notification at each occurrence.

Create, update and delete, pause and resume need the ``send`` scope (a schedule sends), list
and get the ``read`` scope. A tenant sees only its own schedules: another's is a 404. Edits
are read, changed and written under the row's version; a twin edit in between makes this one
start again (a few times, then 409).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, NotFound
from pulse.core.jobs import JobRequest
from pulse.core.timeutil import utcnow
from pulse.http.auth import require
from pulse.http.body import read_body
from pulse.http.decoding import decode_json, decode_query
from pulse.http.job_args import check_args
from pulse.http.jobs import TASKS
from pulse.http.responses import json_response
from pulse.http.schedule_rules import (
    Limits,
    ScheduleList,
    SchedulePatch,
    ScheduleRequest,
    document,
    edited,
    new_schedule,
    resumed,
)
from pulse.http.state import POOL, SETTINGS, SPECS, TENANT_ID
from pulse.store.schedules import JobTemplate, Schedule, ScheduleStore

JSON_TYPES = frozenset({"application/json"})
EDIT_TRIES = 3
routes = web.RouteTableDef()
_Change = Callable[[Schedule, datetime], Schedule]  # an edit: the row read, now -> the new row


class ListQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    cursor: uuid.UUID | None = None  # the ``next_cursor`` of the previous page, as every list pages
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


def _store(request: web.Request) -> ScheduleStore:
    return ScheduleStore(request.app[POOL])


def _limits(request: web.Request) -> Limits:
    settings = request.app[SETTINGS]
    return Limits(
        specs=request.app[SPECS],
        max_depth=settings.max_payload_depth,
        default_max_attempts=settings.default_max_attempts,
    )


def _id(request: web.Request) -> str:
    raw = request.match_info["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no schedule {raw}") from None


async def _json(request: web.Request, kind: type[msgspec.Struct]) -> msgspec.Struct:
    if request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")
    return decode_json(await read_body(request), kind, deep_at="$.notification.payload")


async def _checked_job(request: web.Request, template: JobTemplate | None) -> str | None:
    """The job template as ``POST /api/jobs/`` checks it (size and integers of its arguments,
    unknown task, arguments against the task's published schema: 422 under ``$.job``), as
    stored: each occurrence enqueues it without the API's checks."""
    if template is None:
        return None
    check_args(template.args, request.app[SETTINGS].max_result_bytes, "$.job.args")
    job = JobRequest(
        task=template.task, args=template.args, priority=template.priority,
        max_attempts=template.max_attempts,
    )  # fmt: skip
    try:
        await request.app[TASKS].job_of(request[TENANT_ID], job, None)
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, "$.job" + (exc.pointer or "$")[1:]) from None
    return msgspec.json.encode(template).decode()


async def _found(request: web.Request, schedule_id: str) -> Schedule:
    schedule = await _store(request).get(request[TENANT_ID], schedule_id)
    if schedule is None:
        raise NotFound(f"no schedule {schedule_id}")
    return schedule


@routes.post("/api/schedules")
async def create_schedule(request: web.Request) -> web.Response:
    require(request, "send")
    body = await _json(request, ScheduleRequest)
    assert isinstance(body, ScheduleRequest)
    job = await _checked_job(request, body.job)
    now = utcnow()
    schedule = new_schedule(body, request[TENANT_ID], _limits(request), now, job)
    settings = request.app[SETTINGS]
    most = settings.max_schedules_per_tenant
    created = await _store(request).create(schedule, settings.key_prefix, most)
    if created is None:
        raise web.HTTPConflict(
            text=f"a tenant holds at most {most} schedules (PULSE_MAX_SCHEDULES_PER_TENANT);"
            " delete one first"
        )
    response = json_response(document(created, now), status=201)
    response.headers["Location"] = f"/api/schedules/{created.id}"
    return response


@routes.get("/api/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    require(request, "read")
    query = decode_query(request.query, ListQuery)
    after = None if query.cursor is None else str(query.cursor)
    page = await _store(request).page(request[TENANT_ID], after, query.limit)
    now = utcnow()
    following = page[-1].id if len(page) == query.limit else None
    return json_response(
        ScheduleList(items=[document(s, now) for s in page], next_cursor=following)
    )


@routes.get("/api/schedules/{id}")
async def get_schedule(request: web.Request) -> web.Response:
    require(request, "read")
    return json_response(document(await _found(request, _id(request)), utcnow()))


@routes.patch("/api/schedules/{id}")
async def update_schedule(request: web.Request) -> web.Response:
    require(request, "send")
    patch = await _json(request, SchedulePatch)
    assert isinstance(patch, SchedulePatch)
    limits = _limits(request)
    job = await _checked_job(request, None if patch.job is msgspec.UNSET else patch.job)
    return await _edit(request, lambda old, now: edited(old, patch, limits, now, job))


@routes.post("/api/schedules/{id}/pause")
async def pause_schedule(request: web.Request) -> web.Response:
    require(request, "send")
    return await _edit(request, lambda old, now: msgspec.structs.replace(old, paused=True))


@routes.post("/api/schedules/{id}/resume")
async def resume_schedule(request: web.Request) -> web.Response:
    require(request, "send")
    return await _edit(request, lambda old, now: resumed(old, now) if old.paused else old)


@routes.delete("/api/schedules/{id}")
async def delete_schedule(request: web.Request) -> web.Response:
    require(request, "send")
    schedule_id = _id(request)
    if not await _store(request).delete(request[TENANT_ID], schedule_id):
        raise NotFound(f"no schedule {schedule_id}")
    return web.Response(status=204)


async def _edit(request: web.Request, change: _Change) -> web.Response:
    """Read, change, write under the version read; start again if a twin edit came between."""
    schedule_id = _id(request)
    for _ in range(EDIT_TRIES):
        old = await _found(request, schedule_id)
        now = utcnow()
        new = change(old, now)
        written = old if new == old else await _store(request).replace(new)
        if written is not None:
            return json_response(document(written, now))
    raise web.HTTPConflict(
        headers={"Retry-After": "1"}, text="the schedule was being changed; try again"
    )
