"""Callbacks from providers: Twilio's delivery reports, verified by X-Twilio-Signature.

Not under ``/api/``: providers carry no Pulse key; the signature, made with the account's
auth token over the callback URL Pulse gave (with or without its port: Twilio signs either),
is the authentication. An account whose Webhook Rule signs with a shared key announces it in
``X-Twilio-Webhooks-Signature-Settings``: that key (``PULSE_TWILIO_WEBHOOK_SHARED_KEY``, or the
named provider's ``WEBHOOK_SHARED_KEY``) and the algorithm it names are used instead.
"""

from __future__ import annotations

from aiohttp import web

from pulse.config import Settings, TwilioProvider, provider_env_name
from pulse.core.errors import Forbidden, NotConfigured, NotFound
from pulse.core.signatures import (
    TWILIO_ALGORITHMS,
    twilio_signature_algorithm,
    valid_twilio_signature,
)
from pulse.http.body import read_form
from pulse.http.notifications import parse_id
from pulse.http.state import NOTIFICATIONS, SETTINGS

routes = web.RouteTableDef()


def _account(settings: Settings, provider: str | None) -> tuple[str, str | None] | None:
    """The auth token and webhook shared key of the account that sent the message: the default
    one, or a named provider (its callback URL says which)."""
    if provider is None:
        token = settings.twilio_auth_token
        return (token, settings.twilio_webhook_shared_key) if token else None
    config = settings.providers.get(provider)
    if not isinstance(config, TwilioProvider):
        return None
    return config.auth_token, config.webhook_shared_key


def _signing(
    account: tuple[str, str | None], provider: str | None, settings_header: str | None
) -> tuple[str, str]:
    """The key and algorithm the callback must be signed with: the auth token and SHA-1, or,
    when Twilio announces a Webhook Setting, its shared key and the algorithm it names."""
    if settings_header is None:
        return account[0], "HMAC_SHA1"
    algorithm = twilio_signature_algorithm(settings_header)
    if algorithm not in TWILIO_ALGORITHMS:
        raise Forbidden(f"unsupported Twilio signature algorithm {algorithm[:40]!r}")
    if not account[1]:
        variable = "PULSE_TWILIO_WEBHOOK_SHARED_KEY"
        if provider is not None:
            variable = provider_env_name(provider, "webhook_shared_key")
        raise NotConfigured(f"Twilio signs with a webhook shared key: set {variable}")
    return account[1], algorithm


@routes.post("/providers/twilio/status/{id}")
async def twilio_status(request: web.Request) -> web.Response:
    settings, provider = request.app[SETTINGS], request.query.get("provider")
    account = _account(settings, provider)
    if account is None or not settings.public_url:
        raise NotFound("Twilio callbacks are not configured")
    header = request.headers.get("X-Twilio-Webhooks-Signature-Settings")
    key, algorithm = _signing(account, provider, header)
    params: dict[str, list[str]] = {}
    for name, value in await read_form(request):
        params.setdefault(name, []).append(value)
    url = settings.public_url.rstrip("/") + request.path_qs
    given = request.headers.get("X-Twilio-Signature", "")
    if not valid_twilio_signature(key, url, params, given, algorithm):
        raise Forbidden("the X-Twilio-Signature does not match")
    form = {name: values[-1] for name, values in params.items()}
    notification_id = parse_id(request.match_info["id"])
    detail = " ".join(
        f"{k}={form[k]}" for k in ("MessageSid", "MessageStatus", "ErrorCode") if form.get(k)
    )
    recorded = await request.app[NOTIFICATIONS].provider_event(
        notification_id, f"provider:{form.get('MessageStatus', 'unknown')}", f"twilio {detail}"
    )
    if not recorded:
        raise NotFound(f"no notification {notification_id}")
    return web.Response(status=204)
