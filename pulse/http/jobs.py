"""``/api/jobs``: enqueue a task (202 after commit, Idempotency-Key aware), read it back (with
``?wait=`` to wait for its end without polling), list and cancel."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, NotFound
from pulse.core.jobs import ROW_STATUS, JobDocument, JobList, JobRequest
from pulse.core.timeutil import utcnow
from pulse.http import job_flows
from pulse.http.admission import admit_or_replay
from pulse.http.auth import require
from pulse.http.body import read_body
from pulse.http.decoding import decode_json, decode_query
from pulse.http.idempotency import idempotency_key, render
from pulse.http.job_args import check_args
from pulse.http.notifications import JSON_TYPES
from pulse.http.protocol import with_expect
from pulse.http.responses import json_response
from pulse.http.state import (
    ACCEPT,
    KEY_ID,
    METRICS,
    NOTIFICATIONS,
    POOL,
    REDIS,
    SETTINGS,
    TENANT_ID,
)
from pulse.queue.job_cancels import JobCancels
from pulse.queue.keys import keys_for
from pulse.services.tasks import TaskService
from pulse.store.job_events import JobEvents
from pulse.store.jobs import JobStore

TASKS = web.AppKey("tasks", TaskService)
JOB_EVENTS = web.AppKey("job_events", JobEvents)
MAX_WAIT_S = 60
routes = web.RouteTableDef()


class GetQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    wait: Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT_S)] = 0


class ListQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: (
        Literal[
            "scheduled",
            "waiting",
            "queued",
            "running",
            "retrying",
            "succeeded",
            "failed",
            "cancelled",
        ]
        | None
    ) = None
    task: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1)] = 50
    cursor: str | None = None


def setup(app: web.Application) -> None:
    """Routes and the services they use (after the app's backends are open)."""
    app.cleanup_ctx.append(_services)
    app.add_routes(with_expect(job_flows.routes))
    app.add_routes(with_expect(routes))


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[TASKS] = TaskService(
        app[ACCEPT],
        app[NOTIFICATIONS],
        JobStore(app[POOL]),
        JobCancels(app[REDIS], keys_for(settings)),
        app[METRICS],
    )
    app[JOB_EVENTS] = JobEvents(settings.require_database_url())
    yield
    await app[JOB_EVENTS].close()


@routes.post("/api/jobs")
@routes.post("/api/jobs/")
async def enqueue_job(request: web.Request) -> web.StreamResponse:
    if request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")
    require(request, "send")
    job = decode_json(await read_body(request), JobRequest, deep_at="$.args")
    check_args(job.args, request.app[SETTINGS].max_result_bytes)
    key = idempotency_key(request, job)
    due = job.due(utcnow(), request.app[SETTINGS].max_schedule_ahead_s)  # None: at once
    limited = await admit_or_replay(request, 1, key)
    if isinstance(limited, web.Response):
        return limited
    answer = render(await request.app[TASKS].enqueue(request[TENANT_ID], job, key, due))
    answer.headers.update(limited)
    return answer


@routes.get("/api/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    """The job; with ``?wait=N`` (seconds, at most 60), answered once it ends or N passed."""
    require(request, "read")
    job_id = parse_job_id(request.match_info["id"])
    query = decode_query(request.query, GetQuery)
    tasks, tenant_id = request.app[TASKS], request[TENANT_ID]
    document = await tasks.get(tenant_id, job_id)
    if query.wait and not document.finished:
        document = await _wait(request, job_id, query.wait)
    return json_response(document)


async def _wait(request: web.Request, job_id: str, wait_s: float) -> JobDocument:
    tasks, tenant_id = request.app[TASKS], request[TENANT_ID]
    async with request.app[JOB_EVENTS].watching(job_id) as ended:
        document = await tasks.get(tenant_id, job_id)  # after registering: nothing missed
        if not document.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), wait_s)
            document = await tasks.get(tenant_id, job_id)
    return document


@routes.get("/api/jobs")
@routes.get("/api/jobs/")
async def list_jobs(request: web.Request) -> web.Response:
    """Newest first; filters: status, task; ``cursor`` is the last id of the previous page."""
    require(request, "read")
    query = decode_query(request.query, ListQuery)
    limit = min(query.limit, request.app[SETTINGS].max_list_limit)
    status = None if query.status is None else ROW_STATUS[query.status]
    cursor = None if query.cursor is None else _cursor(query.cursor)
    store = JobStore(request.app[POOL])
    items = await store.list(request[TENANT_ID], status, query.task, cursor, limit)
    next_cursor = items[-1].id if len(items) == limit else None
    return json_response(JobList(items=items, next_cursor=next_cursor))


@routes.post("/api/jobs/{id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Any unfinished job: queued ones never start, a running one sees CancelledError at its
    next await. A finished one is answered as it is (409)."""
    require(request, "send")
    job_id = parse_job_id(request.match_info["id"])
    tasks, tenant_id = request.app[TASKS], request[TENANT_ID]
    before = await tasks.get(tenant_id, job_id)
    if before.finished and before.status != "cancelled":
        raise web.HTTPConflict(text=f"a job that {before.status} cannot be cancelled")
    by = f"key {request[KEY_ID]}"
    after = await tasks.cancel(tenant_id, job_id, by)
    if after.status != "cancelled":  # its run ended before the cancel: the end stands
        raise web.HTTPConflict(text=f"the job's run has ended ({after.status}): not cancelled")
    return json_response(after)


def _cursor(raw: str) -> str:
    try:
        return parse_job_id(raw)
    except NotFound:
        raise InvalidInput("cursor is not one this API gave out", "$.cursor") from None


def parse_job_id(raw: str) -> str:
    """A job id; anything that is not a UUID cannot exist, so it is a 404."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no job {raw}") from None
