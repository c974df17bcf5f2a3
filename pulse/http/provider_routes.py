"""``/api/routes``: which providers deliver each channel for this tenant, in failover order.

Providers are configured by the operator (environment: their credentials never pass through
the API); a tenant chooses among them and their order. Without a route of its own, a tenant
gets the deployment's default (``PULSE_ROUTES``, else the channel's default provider).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, NotConfigured, NotFound
from pulse.core.routes import MAX_ROUTE_LENGTH, ProviderName, RouteError, check_route
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.responses import json_response
from pulse.http.state import DEFAULT_ROUTES, PROVIDERS, ROUTES, SPECS, TENANT_ID
from pulse.store.routes import RouteView

routes = web.RouteTableDef()


class RouteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The providers to try, first to last."""

    providers: Annotated[
        list[ProviderName], msgspec.Meta(min_length=1, max_length=MAX_ROUTE_LENGTH)
    ]


class RouteDocument(msgspec.Struct, kw_only=True):
    channel: str
    providers: list[str]
    source: Literal["tenant", "default"]
    updated_at: datetime | None = None


class ProviderInfo(msgspec.Struct, kw_only=True):
    name: str
    channels: list[str]


class RouteList(msgspec.Struct, kw_only=True):
    routes: list[RouteDocument]
    providers: list[ProviderInfo]


def _document(own: RouteView | None, channel: str, request: web.Request) -> RouteDocument:
    if own is not None:
        return RouteDocument(
            channel=channel, providers=own.providers, source="tenant", updated_at=own.updated_at
        )
    return RouteDocument(
        channel=channel, providers=request.app[DEFAULT_ROUTES][channel], source="default"
    )


def _channel(request: web.Request) -> str:
    channel = request.match_info["channel"]
    if channel not in request.app[DEFAULT_ROUTES]:
        raise NotFound(f"no channel {channel!r}")
    missing = request.app[SPECS][channel].missing
    if missing is not None:
        raise NotConfigured(f"this deployment cannot deliver {channel!r}: {missing} is not set")
    return channel


def _deliverable(request: web.Request) -> list[str]:
    """The channels some configured provider serves: the only ones the routes list shows."""
    specs = request.app[SPECS]
    return sorted(name for name in request.app[DEFAULT_ROUTES] if specs[name].missing is None)


async def _own(request: web.Request) -> dict[str, RouteView]:
    views = await request.app[ROUTES].of_tenant(request[TENANT_ID])
    return {view.channel: view for view in views}


@routes.get("/api/routes")
async def list_routes(request: web.Request) -> web.Response:
    require(request, "read")
    own = await _own(request)
    document = RouteList(
        routes=[_document(own.get(channel), channel, request) for channel in _deliverable(request)],
        providers=[
            ProviderInfo(name=name, channels=sorted(channels))
            for name, channels in sorted(request.app[PROVIDERS].items())
        ],
    )
    return json_response(document)


@routes.get("/api/routes/{channel}")
async def get_route(request: web.Request) -> web.Response:
    require(request, "read")
    channel = _channel(request)
    return json_response(_document((await _own(request)).get(channel), channel, request))


@routes.put("/api/routes/{channel}")
async def put_route(request: web.Request) -> web.Response:
    require(request, "admin")
    channel = _channel(request)
    body = await read_json(request, RouteRequest)
    try:
        providers = check_route(channel, body.providers, request.app[PROVIDERS])
    except RouteError as exc:
        raise InvalidInput(exc.reason, f"$.providers[{exc.index}]") from None
    view = await request.app[ROUTES].put(request[TENANT_ID], channel, providers)
    return json_response(_document(view, channel, request))


@routes.delete("/api/routes/{channel}")
async def delete_route(request: web.Request) -> web.Response:
    require(request, "admin")
    channel = _channel(request)
    if not await request.app[ROUTES].delete(request[TENANT_ID], channel):
        raise NotFound(f"no route of your own for {channel}; the default is in force")
    return web.Response(status=204)
