"""``/api/webhooks/secret``: the secret a tenant's webhooks are signed with, for its admins.

Each tenant has its own ``whsec_`` secret, so no tenant can sign a webhook another tenant's
receiver would trust. It is derived from the deployment's ``PULSE_RECEIPT_SIGNING_KEY`` (like
receipt secrets, under a label of its own), so nothing secret is stored; rotating moves to the
next secret while the previous one keeps signing for a day (each webhook then carries both
signatures).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from pulse.core.errors import NotConfigured
from pulse.core.signatures import WEBHOOKS, SecretGeneration, tenant_secret
from pulse.core.timeutil import utcnow
from pulse.http.auth import require
from pulse.http.responses import json_response, rotation_in_overlap
from pulse.http.state import POOL, SETTINGS, TENANT_ID
from pulse.store.webhook_secrets import WebhookSecretStore

routes = web.RouteTableDef()


class WebhookSecretDocument(msgspec.Struct, kw_only=True):
    secret: str  # whsec_...: verify each webhook's webhook-signature header with it
    previous_secret: str | None  # still signing until previous_secret_until (for a day after a
    # rotation; None once that day is over)
    previous_secret_until: datetime | None
    rotated_at: datetime | None


def _signing_key(request: web.Request) -> str:
    key = request.app[SETTINGS].receipt_signing_key
    if not key:
        raise NotConfigured(
            "webhook secrets are derived from PULSE_RECEIPT_SIGNING_KEY: set it on the API and"
            " workers"
        )
    return key


def _document(request: web.Request, state: SecretGeneration) -> web.Response:
    key, tenant = _signing_key(request), request[TENANT_ID]
    until = state.previous_until(utcnow())
    previous = None if until is None else tenant_secret(key, WEBHOOKS, tenant, state.generation - 1)
    return json_response(
        WebhookSecretDocument(
            secret=tenant_secret(key, WEBHOOKS, tenant, state.generation),
            previous_secret=previous,
            previous_secret_until=until,
            rotated_at=state.rotated_at,
        )
    )


def _store(request: web.Request) -> WebhookSecretStore:
    return WebhookSecretStore(request.app[POOL])


@routes.get("/api/webhooks/secret")
async def get_secret(request: web.Request) -> web.Response:
    require(request, "admin")
    _signing_key(request)
    return _document(request, await _store(request).get(request[TENANT_ID]))


@routes.post("/api/webhooks/secret/rotate")
async def rotate_secret(request: web.Request) -> web.Response:
    require(request, "admin")
    _signing_key(request)
    store = _store(request)
    rotated = await store.rotate(request[TENANT_ID])
    if rotated is None:
        raise rotation_in_overlap(await store.get(request[TENANT_ID]))
    return _document(request, rotated)
