"""``/api/dead-letters``: list, show, replay and purge a tenant's dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from pulse.core.documents import DeadLetterDocument, DeadLetterList, Replayed
from pulse.core.errors import NotFound
from pulse.core.models import RowId
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.decoding import decode_query
from pulse.http.responses import json_response
from pulse.http.state import DEAD_LETTERS, KEY_ID, NOTIFICATIONS, TENANT_ID
from pulse.store.dead_letters import DeadLetterFilter

routes = web.RouteTableDef()
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class ListQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: Limit = 100
    cursor: RowId = 0


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: Annotated[list[RowId], msgspec.Meta(max_length=1000)] | None = None
    limit: Limit = 100
    rate: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 100.0


@routes.get("/api/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    require(request, "read")
    query = decode_query(request.query, ListQuery)
    where = DeadLetterFilter(
        tenant_id=request[TENANT_ID],
        channel=query.channel,
        error_class=query.error_class,
        since=query.since,
        until=query.until,
    )
    items = await request.app[DEAD_LETTERS].store.find(where, query.cursor, query.limit)
    cursor = items[-1].id if len(items) == query.limit else None
    return json_response(DeadLetterList(items=items, next_cursor=cursor))


@routes.get("/api/dead-letters/{id:\\d+}")
async def show_dead_letter(request: web.Request) -> web.Response:
    require(request, "read")
    dead_letter_id = row_id(request.match_info["id"])
    where = DeadLetterFilter(tenant_id=request[TENANT_ID], ids=[dead_letter_id])
    service = request.app[DEAD_LETTERS]
    found = await service.store.find(where, 0, 1)
    if not found or found[0].notification_id is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    item = found[0]
    notification_id = item.notification_id
    assert notification_id is not None
    notification = await request.app[NOTIFICATIONS].get(request[TENANT_ID], notification_id)
    attempts = await service.store.attempts(notification_id)
    return json_response(
        DeadLetterDocument(dead_letter=item, notification=notification, attempts=attempts)
    )


@routes.post("/api/dead-letters/{id:\\d+}/replay")
async def replay_one(request: web.Request) -> web.Response:
    where = DeadLetterFilter(tenant_id=request[TENANT_ID], ids=[row_id(request.match_info["id"])])
    count = await _replay(request, where, limit=1, rate=100.0)
    if count == 0:
        raise NotFound(f"no dead letter {request.match_info['id']} to replay")
    return json_response(Replayed(replayed=count), status=202)


@routes.post("/api/dead-letters/replay")
async def replay_many(request: web.Request) -> web.Response:
    require(request, "admin")
    replay = await read_json(request, ReplayRequest)
    where = DeadLetterFilter(
        tenant_id=request[TENANT_ID],
        channel=replay.channel,
        error_class=replay.error_class,
        since=replay.since,
        until=replay.until,
        ids=replay.ids,
    )
    count = await _replay(request, where, limit=replay.limit, rate=replay.rate)
    return json_response(Replayed(replayed=count), status=202)


@routes.delete("/api/dead-letters/{id:\\d+}")
async def purge_one(request: web.Request) -> web.Response:
    require(request, "admin")
    where = DeadLetterFilter(tenant_id=request[TENANT_ID], ids=[row_id(request.match_info["id"])])
    purged = await request.app[DEAD_LETTERS].purge(where)
    if purged == 0:
        raise NotFound(f"no dead letter {request.match_info['id']}")
    return web.Response(status=204)


async def _replay(request: web.Request, where: DeadLetterFilter, limit: int, rate: float) -> int:
    require(request, "admin")
    by = f"key {request[KEY_ID]}"
    return await request.app[DEAD_LETTERS].replay(where, by, limit=limit, rate=rate)


def row_id(raw: str) -> int:
    """A dead letter id from the path; one beyond bigint cannot exist."""
    value = int(raw)
    if value > 2**63 - 1:
        raise NotFound(f"no dead letter {raw}")
    return value
