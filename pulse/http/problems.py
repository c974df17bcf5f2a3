"""RFC 9457 problem details: every error response of the API, 404 and 405 included.

One middleware turns each deliberate error class into its problem, and is the one place where
an unreachable PostgreSQL or Redis becomes a 503 with Retry-After; anything unexpected is
logged with the request id and answered as a 500 problem that reveals no internals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from pulse.core.errors import (
    Forbidden,
    InvalidInput,
    NotConfigured,
    NotFound,
    PulseError,
    RateLimited,
    Unavailable,
)
from pulse.http.body import ClientGone
from pulse.http.decoding import PointedInput
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.services.accept import KeyBusy, KeyReused
from pulse.store.errors import TRANSIENT_DB_ERRORS, UNSTORABLE_VALUE_ERRORS

logger = logging.getLogger("pulse.http")
PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer
RETRY_AFTER_S = 1

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    417: "Expectation failed",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    501: "Not configured",
    503: "Service unavailable",
}
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    417: "expectation-failed",
    422: "validation-failed",
    429: "rate-limited",
    500: "internal-error",
    501: "not-configured",
    503: "unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"urn:pulse:problem:{_SLUGS.get(status, 'error')}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def json_pointer(path: str) -> str:
    """``$.payload.items[0]`` becomes the JSON Pointer ``/payload/items/0``."""
    parts = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path[1:])
    return "".join(f"/{name or index}" for name, index in parts)


def invalid_input(exc: InvalidInput, instance: str) -> web.Response:
    if isinstance(exc, PointedInput):
        return _pointed(exc, instance)
    if exc.pointer is None:
        return problem(400, exc.detail, instance=instance)
    field = exc.pointer[2:] or None
    return problem(
        422,
        exc.detail,
        instance=instance,
        errors=[{"detail": exc.detail, "pointer": json_pointer(exc.pointer), "field": field}],
    )


def _pointed(exc: PointedInput, instance: str) -> web.Response:
    if exc.at is None:
        return problem(exc.status, exc.detail, instance=instance)
    field = exc.at[1:].replace("/", ".") or None
    error = {"detail": exc.detail, "pointer": exc.at, "field": field}
    return problem(exc.status, exc.detail, instance=instance, errors=[error])


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    try:
        return await handler(request)
    except PulseError as exc:
        return deliberate(exc, path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.text or exc.reason, instance=path, headers=_keep(exc))
    except Exception as exc:
        return _undeliberate(exc, request)


def _undeliberate(exc: Exception, request: web.Request) -> web.StreamResponse:
    """Errors from below: an outage (503), a value PostgreSQL refuses (422), a client gone;
    anything else is a bug, logged with its traceback (500)."""
    path = request.path
    if isinstance(exc, ClientGone):
        logger.info("client left during %s %s", request.method, path)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    if isinstance(exc, TRANSIENT_DB_ERRORS):
        return unavailable("the database is unreachable; retry shortly", path)
    if isinstance(exc, TRANSIENT_REDIS_ERRORS):
        return unavailable("the queue is unreachable; retry shortly", path)
    if isinstance(exc, UNSTORABLE_VALUE_ERRORS):  # the last guard: decoding refuses these first
        return problem(422, "a value in the request cannot be stored", instance=path)
    logger.exception("unhandled error on %s %s", request.method, path)
    return problem(500, "an unexpected error occurred; it has been logged", instance=path)


def unavailable(detail: str, path: str, retry_after_s: int = RETRY_AFTER_S) -> web.Response:
    return problem(503, detail, instance=path, headers={"Retry-After": str(retry_after_s)})


def deliberate(exc: PulseError, path: str) -> web.Response:
    """The problem for each error Pulse raises on purpose."""
    if isinstance(exc, InvalidInput):
        return invalid_input(exc, path)
    if isinstance(exc, Unavailable):
        return unavailable(exc.detail, path, exc.retry_after_s)
    if isinstance(exc, KeyBusy):
        return unavailable_key(str(exc), path)
    if isinstance(exc, RateLimited):
        headers = exc.headers | {"Retry-After": str(exc.retry_after_s)}
        return problem(429, exc.detail, instance=path, headers=headers)
    status = {Forbidden: 403, NotFound: 404, NotConfigured: 501, KeyReused: 422}.get(type(exc), 400)
    return problem(status, str(exc) or _TITLES[status], instance=path)


def unavailable_key(detail: str, path: str) -> web.Response:
    """409: the key's first request is in flight; retry shortly (and get its answer)."""
    return problem(409, detail, instance=path, headers={"Retry-After": str(RETRY_AFTER_S)})


def _keep(exc: web.HTTPException) -> dict[str, str]:
    """Headers that must survive the rewrite (Allow on 405, WWW-Authenticate on 401)."""
    names = ("Allow", "WWW-Authenticate", "Retry-After")
    return {name: exc.headers[name] for name in names if name in exc.headers}
