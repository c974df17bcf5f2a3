"""RFC 9457 problem details: every error response of the API, 404 and 405 included.

One middleware turns each deliberate error class into its problem; anything unexpected is
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
    Unavailable,
)
from pulse.store.errors import UNSTORABLE_VALUE_ERRORS

logger = logging.getLogger("pulse.http")
PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
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
    422: "validation-failed",
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
    if exc.pointer is None:
        return problem(400, exc.detail, instance=instance)
    field = exc.pointer[2:] or None
    return problem(
        422,
        exc.detail,
        instance=instance,
        errors=[{"detail": exc.detail, "pointer": json_pointer(exc.pointer), "field": field}],
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    try:
        return await handler(request)
    except PulseError as exc:
        return deliberate(exc, path)
    except UNSTORABLE_VALUE_ERRORS as exc:
        detail = f"a value cannot be stored ({type(exc).__name__}: {exc})"
        return problem(422, detail, instance=path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.text or exc.reason, instance=path, headers=_keep(exc))
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, path)
        return problem(500, "an unexpected error occurred; it has been logged", instance=path)


def deliberate(exc: PulseError, path: str) -> web.Response:
    """The problem for each error Pulse raises on purpose."""
    if isinstance(exc, InvalidInput):
        return invalid_input(exc, path)
    if isinstance(exc, Unavailable):
        return problem(
            503, exc.detail, instance=path, headers={"Retry-After": str(exc.retry_after_s)}
        )
    status = {Forbidden: 403, NotFound: 404, NotConfigured: 501}.get(type(exc), 400)
    return problem(status, str(exc) or _TITLES[status], instance=path)


def _keep(exc: web.HTTPException) -> dict[str, str]:
    """Headers that must survive the rewrite (Allow on 405, WWW-Authenticate on 401)."""
    names = ("Allow", "WWW-Authenticate", "Retry-After")
    return {name: exc.headers[name] for name in names if name in exc.headers}
