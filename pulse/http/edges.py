"""Cross-cutting HTTP concerns: the request's context (its id and its trace), and CORS (off
unless origins are configured)."""

from __future__ import annotations

import re

from aiohttp import web

from pulse import tracing
from pulse.core.tracecontext import TraceContext, parse_traceparent, random_hex
from pulse.http.problems import Handler
from pulse.http.protocol import route_name
from pulse.http.state import SETTINGS
from pulse.logs import request_id

HEADER = "X-Request-ID"
# A client's id is kept only if it is short and made of characters that cannot end, split or
# colour a log line, nor close the ``[...]`` it is logged in: UUIDs, hex, base64 and
# ``trace:span``-style ids all fit. Anything else is replaced, not cleaned: a cleaned id would
# no longer be the client's anyway.
SAFE_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID, traceparent, tracestate"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's context: keep a safe client-given id, else make one, and echo it; serve
    the request in a span of the client's trace (a valid ``traceparent``), else of a new one.
    Every log line written meanwhile carries both."""
    ident = safe_request_id(request.headers.get(HEADER))
    token = request_id.set(ident)
    route, method = route_name(request), request.method
    try:
        with tracing.span(
            f"{method} {route}",
            client_trace(request),
            kind="server",
            attributes={"http.request.method": method, "http.route": route},
        ) as span:
            response = await handler(request)
            span.set("http.response.status_code", response.status)
    finally:
        request_id.reset(token)
    response.headers[HEADER] = ident
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """A response prepared inside its handler (an event stream) is sent before the middleware
    could add the id: add it as it is prepared."""
    if HEADER not in response.headers and request_id.get() != "-":
        response.headers[HEADER] = request_id.get()


def client_trace(request: web.Request) -> TraceContext | None:
    """The client's W3C trace context; None (a new trace) when it is missing, malformed or
    given twice: a bad header is ignored, never an error."""
    parents = request.headers.getall("traceparent", [])
    state = request.headers.getall("tracestate", [])
    return parse_traceparent(parents[0], state) if len(parents) == 1 else None


def safe_request_id(given: str | None) -> str:
    """``given`` if it matches ``SAFE_ID`` in full, else a new random id (32 hex digits; as
    for trace ids, unique and random but not secret: no system call per request)."""
    if given is not None and SAFE_ID.fullmatch(given):
        return given
    return random_hex(16)


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
