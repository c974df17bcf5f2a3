"""``/api/receipts``: where Pulse reports each notification's end (delivered, failed for good).

Every report is a Standard Webhooks POST (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) signed with the tenant's own ``whsec_`` secret, shown here to admins.
The secret is derived from the deployment's ``PULSE_RECEIPT_SIGNING_KEY``, so nothing secret is
stored; rotating moves to the next secret while the previous one keeps signing for a day.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, NotConfigured, NotFound
from pulse.core.signatures import receipt_secret
from pulse.core.timeutil import utcnow
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.responses import json_response, rotation_in_overlap
from pulse.http.state import RECEIPTS, SETTINGS, SPECS, TENANT_ID
from pulse.store.receipts import ReceiptEndpoint

routes = web.RouteTableDef()
Event = Literal["delivered", "failed", "skipped"]
NO_ENDPOINT = "no receipt endpoint is set"


class ReceiptRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: ["delivered", "failed"]
    )


class ReceiptDocument(msgspec.Struct, kw_only=True):
    url: str
    events: list[str]
    secret: str  # whsec_...: verify the webhook-signature header with it
    previous_secret: str | None  # still signing until previous_secret_until (for a day after a
    # rotation; None once that day is over)
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime


def _signing_key(request: web.Request) -> str:
    key = request.app[SETTINGS].receipt_signing_key
    if not key:
        raise NotConfigured("receipts need PULSE_RECEIPT_SIGNING_KEY set on the API and workers")
    return key


def _document(request: web.Request, endpoint: ReceiptEndpoint) -> ReceiptDocument:
    key, tenant = _signing_key(request), request[TENANT_ID]
    until = endpoint.secret_generation.previous_until(utcnow())
    previous = None if until is None else receipt_secret(key, tenant, endpoint.generation - 1)
    return ReceiptDocument(
        url=endpoint.url,
        events=endpoint.events,
        secret=receipt_secret(key, tenant, endpoint.generation),
        previous_secret=previous,
        previous_secret_until=until,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _found(request: web.Request, endpoint: ReceiptEndpoint | None) -> web.Response:
    if endpoint is None:
        raise NotFound(NO_ENDPOINT)
    return json_response(_document(request, endpoint))


@routes.get("/api/receipts")
async def get_receipts(request: web.Request) -> web.Response:
    require(request, "admin")
    _signing_key(request)
    return _found(request, await request.app[RECEIPTS].get(request[TENANT_ID]))


@routes.put("/api/receipts")
async def put_receipts(request: web.Request) -> web.Response:
    require(request, "admin")
    _signing_key(request)
    body = await read_json(request, ReceiptRequest)
    try:
        url = request.app[SPECS]["webhook"].check_recipient(body.url)
    except ValueError as exc:
        raise InvalidInput(str(exc), "$.url") from None
    events = sorted(set(body.events))
    endpoint = await request.app[RECEIPTS].put(request[TENANT_ID], url, events)
    return json_response(_document(request, endpoint))


@routes.delete("/api/receipts")
async def delete_receipts(request: web.Request) -> web.Response:
    require(request, "admin")
    if not await request.app[RECEIPTS].delete(request[TENANT_ID]):
        raise NotFound(NO_ENDPOINT)
    return web.Response(status=204)


@routes.post("/api/receipts/rotate")
async def rotate_secret(request: web.Request) -> web.Response:
    require(request, "admin")
    _signing_key(request)
    store = request.app[RECEIPTS]
    rotated = await store.rotate(request[TENANT_ID])
    if rotated is None and (current := await store.get(request[TENANT_ID])) is not None:
        raise rotation_in_overlap(current.secret_generation)
    return _found(request, rotated)
