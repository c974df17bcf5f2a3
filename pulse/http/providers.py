"""Callbacks from providers: Twilio's delivery reports, verified by X-Twilio-Signature.

Not under ``/api/``: providers carry no Pulse key; the signature, made with the account's
auth token over the exact callback URL Pulse gave, is the authentication.
"""

from __future__ import annotations

from aiohttp import web

from pulse.errors import Forbidden, NotFound
from pulse.http.notifications import parse_id
from pulse.http.responses import from_db
from pulse.http.state import NOTIFICATIONS, SETTINGS
from pulse.signatures import valid_twilio_signature

routes = web.RouteTableDef()


@routes.post("/providers/twilio/status/{id}")
async def twilio_status(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.twilio_auth_token or not settings.public_url:
        raise NotFound("Twilio callbacks are not configured")
    form = {name: str(value) for name, value in (await request.post()).items()}
    url = settings.public_url.rstrip("/") + request.path
    given = request.headers.get("X-Twilio-Signature", "")
    if not valid_twilio_signature(settings.twilio_auth_token, url, form, given):
        raise Forbidden("the X-Twilio-Signature does not match")
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
