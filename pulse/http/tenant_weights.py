"""``/api/tenants/{id}/weight``: an operator sets a tenant's weight in the fair share between
the tenants of one priority (default 1; a tenant of weight 3 gets three times the deliveries
of one of weight 1 while both have work waiting)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from pulse.core.errors import NotFound
from pulse.http.auth import operated_tenant
from pulse.http.body import read_json
from pulse.http.responses import json_response
from pulse.http.state import POOL
from pulse.store.tenant_weights import MAX_WEIGHT, TenantWeights

routes = web.RouteTableDef()

Weight = Annotated[int, msgspec.Meta(ge=1, le=MAX_WEIGHT)]


class WeightRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The tenant's weight: 1 (the default) to 1000."""

    weight: Weight


class WeightDocument(WeightRequest, kw_only=True):
    tenant_id: str


@routes.get("/api/tenants/{id}/weight")
async def get_weight(request: web.Request) -> web.Response:
    tenant_id = operated_tenant(request)
    weight = await TenantWeights(request.app[POOL]).get(tenant_id)
    if weight is None:
        raise NotFound(f"no tenant {tenant_id}")
    return json_response(WeightDocument(tenant_id=tenant_id, weight=weight))


@routes.put("/api/tenants/{id}/weight")
async def put_weight(request: web.Request) -> web.Response:
    tenant_id = operated_tenant(request)
    body = await read_json(request, WeightRequest)
    if not await TenantWeights(request.app[POOL]).put(tenant_id, body.weight):
        raise NotFound(f"no tenant {tenant_id}")
    return json_response(WeightDocument(tenant_id=tenant_id, weight=body.weight))
