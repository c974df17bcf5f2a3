"""``POST /api/jobs/batch`` (many jobs, each answered on its own) and ``POST /api/jobs/group``
(jobs side by side and a callback receiving their results). Both commit once and stream the
jobs queued now in one pipelined round trip; Idempotency-Key aware. Both are admitted by the
ingress limits as one request of as many units as it holds jobs (a group's callback included).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput
from pulse.core.jobs import JobBatchRequest, JobGroupRequest, JobRequest
from pulse.http.admission import admit_or_replay
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.decoding import explain
from pulse.http.idempotency import idempotency_key, render
from pulse.http.job_args import check_args
from pulse.http.notifications import JSON_TYPES
from pulse.http.problems import problem
from pulse.http.state import SETTINGS, TENANT_ID
from pulse.services.task_flows import GroupBound, NoValidItem

routes = web.RouteTableDef()


def _json_only(request: web.Request) -> None:
    if request.content_type not in JSON_TYPES:
        raise web.HTTPUnsupportedMediaType(text="send the body as 'Content-Type: application/json'")


@routes.post("/api/jobs/batch")
async def enqueue_batch(request: web.Request) -> web.Response:
    """``{"items": [{"task": ..., "args": {...}}, ...]}``: 202 with each item's id or errors;
    422 when no item is valid."""
    from pulse.http.jobs import TASKS  # the service is built with the jobs routes

    _json_only(request)
    require(request, "send")
    settings = request.app[SETTINGS]
    batch = await read_json(request, JobBatchRequest, settings.max_batch_body_bytes, "$.items")
    if not batch.items:
        raise InvalidInput("a batch needs at least one item", "$.items")
    if len(batch.items) > settings.batch_max_items:
        limit = settings.batch_max_items
        raise InvalidInput(
            f"a batch holds at most {limit} items (PULSE_BATCH_MAX_ITEMS)", "$.items"
        )
    items: list[JobRequest | InvalidInput] = []
    for raw in batch.items:
        try:
            item = msgspec.convert(raw, JobRequest)
            check_args(item.args, settings.max_result_bytes)
            items.append(item)
        except msgspec.ValidationError as exc:
            items.append(explain(exc))
        except InvalidInput as exc:
            items.append(exc)
    key = idempotency_key(request, batch)
    cost = sum(isinstance(item, JobRequest) for item in items)  # what decoded: what may run
    limited = await admit_or_replay(request, cost, key, "$.items") if cost else {}
    if isinstance(limited, web.Response):
        return limited
    flows = request.app[TASKS].flows
    try:
        answer = await flows.batch(request[TENANT_ID], items, key, settings.max_schedule_ahead_s)
    except NoValidItem as exc:
        return problem(422, exc.detail, instance=request.path, errors=exc.errors)
    response = render(answer)
    response.headers.update(limited)
    return response


@routes.post("/api/jobs/group")
async def enqueue_group(request: web.Request) -> web.Response:
    """``{"jobs": [...], "then": {...}}``: 202 with the members' ids and the callback's."""
    from pulse.http.jobs import TASKS

    _json_only(request)
    require(request, "send")
    settings = request.app[SETTINGS]
    group = await read_json(request, JobGroupRequest, settings.max_batch_body_bytes, "$.jobs")
    for i, job in enumerate(group.jobs):
        check_args(job.args, settings.max_result_bytes, f"$.jobs[{i}].args")
    if group.then is not None:
        check_args(group.then.args, settings.max_result_bytes, "$.then.args")
    key = idempotency_key(request, group)
    cost = len(group.jobs) + (group.then is not None)
    limited = await admit_or_replay(request, cost, key, "$.jobs")
    if isinstance(limited, web.Response):
        return limited
    bound = GroupBound(settings.max_result_bytes, settings.max_group_results_bytes)
    response = render(await request.app[TASKS].flows.group(request[TENANT_ID], group, key, bound))
    response.headers.update(limited)
    return response
