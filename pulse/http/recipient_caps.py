"""``/api/recipient-caps``: a tenant's frequency caps, per channel: at most ``max`` deliveries
to one recipient per ``window_s``; over it a notification waits for the window (``defer``) or
ends ``skipped`` with the reason (``skip``). Set by the tenant's admins; workers pick a change
up within ``PULSE_ROUTES_REFRESH_S``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pulse.core.errors import NotFound
from pulse.core.limits import RecipientCap
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.responses import json_response
from pulse.http.state import POOL, SPECS, TENANT_ID
from pulse.store.recipient_caps import RecipientCapStore

routes = web.RouteTableDef()
MAX_WINDOW_S = 31 * 86_400


class RecipientCapRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    window_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_S)]
    over: Literal["defer", "skip"] = "defer"


class RecipientCapDocument(RecipientCapRequest, kw_only=True):
    channel: str
    updated_at: datetime


class RecipientCapList(msgspec.Struct, kw_only=True):
    items: list[RecipientCapDocument]


def _document(channel: str, cap: RecipientCap, updated_at: datetime) -> RecipientCapDocument:
    return RecipientCapDocument(
        channel=channel,
        max=cap.max_count,
        window_s=cap.window_s,
        over="skip" if cap.over == "skip" else "defer",
        updated_at=updated_at,
    )


def _channel(request: web.Request) -> str:
    channel = request.match_info["channel"]
    if channel not in request.app[SPECS]:
        raise NotFound(f"no channel {channel!r}")
    return channel


def _store(request: web.Request) -> RecipientCapStore:
    return RecipientCapStore(request.app[POOL])


@routes.get("/api/recipient-caps")
async def list_caps(request: web.Request) -> web.Response:
    require(request, "admin")
    caps = await _store(request).of(request[TENANT_ID])
    items = [_document(channel, cap, at) for channel, (cap, at) in caps.items()]
    return json_response(RecipientCapList(items=items))


@routes.put("/api/recipient-caps/{channel}")
async def put_cap(request: web.Request) -> web.Response:
    require(request, "admin")
    channel = _channel(request)
    body = await read_json(request, RecipientCapRequest)
    cap = RecipientCap(body.max, body.window_s, body.over)
    updated_at = await _store(request).put(request[TENANT_ID], channel, cap)
    return json_response(_document(channel, cap, updated_at))


@routes.delete("/api/recipient-caps/{channel}")
async def delete_cap(request: web.Request) -> web.Response:
    require(request, "admin")
    channel = request.match_info["channel"]
    if not await _store(request).delete(request[TENANT_ID], channel):
        raise NotFound(f"no recipient cap on {channel!r}")
    return web.Response(status=204)
