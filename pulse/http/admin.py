"""Tenants and API keys: an operator's admin key creates tenants; a tenant's admin key
creates, lists and revokes its own keys (several at once, so keys rotate without downtime)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web

from pulse.core.documents import KeyList, NewKey, NewTenantDocument
from pulse.core.errors import InvalidInput, NotFound
from pulse.http.auth import require, require_operator
from pulse.http.body import read_json
from pulse.http.responses import json_response
from pulse.http.state import TENANT_ID, TENANTS
from pulse.store.tenants import SCOPES

routes = web.RouteTableDef()
Scope = Annotated[str, msgspec.Meta(pattern="^(send|read|admin)$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class NewTenantRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    operator: bool = False


class NewKeyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["send", "read"]
    )


@routes.post("/api/tenants")
async def create_tenant(request: web.Request) -> web.Response:
    require_operator(request)
    body = await read_json(request, NewTenantRequest)
    try:
        tenant = await request.app[TENANTS].create(body.name, operator=body.operator)
    except asyncpg.UniqueViolationError:
        raise InvalidInput(f"a tenant named {body.name!r} exists already", "$.name") from None
    document = NewTenantDocument(
        id=tenant.tenant_id, name=tenant.name, api_key=tenant.api_key, scopes=list(SCOPES)
    )
    return json_response(document, status=201)


@routes.get("/api/keys")
async def list_keys(request: web.Request) -> web.Response:
    require(request, "admin")
    return json_response(KeyList(items=await request.app[TENANTS].keys(request[TENANT_ID])))


@routes.post("/api/keys")
async def create_key(request: web.Request) -> web.Response:
    require(request, "admin")
    body = await read_json(request, NewKeyRequest)
    scopes = sorted(set(body.scopes))
    key_id, key = await request.app[TENANTS].add_key(request[TENANT_ID], scopes, body.name)
    return json_response(NewKey(id=key_id, api_key=key, scopes=scopes), status=201)


@routes.delete("/api/keys/{id}")
async def revoke_key(request: web.Request) -> web.Response:
    require(request, "admin")
    key_id = request.match_info["id"]
    try:
        revoked = await request.app[TENANTS].revoke(request[TENANT_ID], key_id)
    except asyncpg.DataError:  # not a UUID: no such key
        revoked = False
    if not revoked:
        raise NotFound(f"no active key {key_id}")
    return web.Response(status=204)
