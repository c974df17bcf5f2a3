"""Cross-cutting HTTP concerns: request ids, and CORS (off unless origins are configured)."""

from __future__ import annotations

import uuid

from aiohttp import web

from pulse.http.problems import Handler
from pulse.http.state import SETTINGS
from pulse.logs import request_id

HEADER = "X-Request-ID"
MAX_ID_LENGTH = 128
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep a sane client-given id, else make one; echo it and tag every log line with it."""
    given = request.headers.get(HEADER, "")
    ident = given if 0 < len(given) <= MAX_ID_LENGTH and given.isprintable() else uuid.uuid4().hex
    token = request_id.set(ident)
    try:
        response = await handler(request)
    finally:
        request_id.reset(token)
    response.headers[HEADER] = ident
    return response


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[SETTINGS].cors_allowed()
    origin = request.headers.get("Origin")
    allowed = origin is not None and (origin in origins or "*" in origins)
    if (
        allowed
        and request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
    ):
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Expose-Headers"] = "Location, X-Request-ID, Retry-After"
    return response
