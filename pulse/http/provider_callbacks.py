"""Callbacks from providers: Twilio's delivery reports, verified by X-Twilio-Signature.

Not under ``/api/``: providers carry no Pulse key; the signature, made with the account's
auth token over the callback URL Pulse gave (with or without its port: Twilio signs either),
is the authentication.
"""

from __future__ import annotations

from aiohttp import web

from pulse.config import Settings, TwilioProvider
from pulse.core.errors import Forbidden, NotFound
from pulse.core.signatures import valid_twilio_signature
from pulse.http.notifications import parse_id
from pulse.http.responses import from_db
from pulse.http.state import NOTIFICATIONS, SETTINGS

routes = web.RouteTableDef()


def _auth_token(settings: Settings, provider: str | None) -> str | None:
    """The token of the account that sent the message: the default one, or a named provider
    (its callback URL says which)."""
    if provider is None:
        return settings.twilio_auth_token
    config = settings.providers.get(provider)
    return config.auth_token if isinstance(config, TwilioProvider) else None


@routes.post("/providers/twilio/status/{id}")
async def twilio_status(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    token = _auth_token(settings, request.query.get("provider"))
    if not token or not settings.public_url:
        raise NotFound("Twilio callbacks are not configured")
    posted = await request.post()
    params = {name: [str(value) for value in posted.getall(name)] for name in posted}
    url = settings.public_url.rstrip("/") + request.path_qs
    given = request.headers.get("X-Twilio-Signature", "")
    if not valid_twilio_signature(token, url, params, given):
        raise Forbidden("the X-Twilio-Signature does not match")
    form = {name: values[-1] for name, values in params.items()}
    notification_id = parse_id(request.match_info["id"])
    detail = " ".join(
        f"{k}={form[k]}" for k in ("MessageSid", "MessageStatus", "ErrorCode") if form.get(k)
    )
    recorded = await from_db(
        request.app[NOTIFICATIONS].provider_event(
            notification_id, f"provider:{form.get('MessageStatus', 'unknown')}", f"twilio {detail}"
        )
    )
    if not recorded:
        raise NotFound(f"no notification {notification_id}")
    return web.Response(status=204)
