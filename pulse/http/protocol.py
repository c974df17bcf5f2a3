"""What aiohttp's HTTP layer does before Pulse's code runs: its log, and ``Expect`` headers.

aiohttp's parser refuses a malformed request (a bare LF or NUL in a header, a raw non-ASCII
byte in the target, a line over 8190 bytes) with a 400, then logs it at ERROR with a traceback
and the offending bytes: anyone could flood the log. ``ProtocolLogger`` logs such a refusal as
one line naming the error and its status; every other error keeps its traceback.

aiohttp's own ``Expect`` handler answers 500 for a value that is not UTF-8 (its 417 text cannot
encode it). ``expect_continue`` answers 100-continue as aiohttp does, anything else with a 417
problem, and ``with_expect`` gives it to every route of a table. aiohttp's own route for a
path nothing matches (its 404 and 405) cannot be given an Expect handler: ``add_unrouted`` adds
a last route that matches any path and answers the 404 or 405 aiohttp would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from pulse.http.problems import problem

SERVER_LOGGER = "aiohttp.server"  # where aiohttp logs its protocol errors, kept for filters
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ProtocolLogger(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with a client's malformed request logged as one quiet line."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger(SERVER_LOGGER), {})

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        refused = kwargs.get("exc_info")
        if isinstance(refused, HttpProcessingError):
            self.info("refused a malformed request: %s (%d)", type(refused).__name__, refused.code)
            return
        super().exception(msg, *args, **kwargs)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` gets its interim answer; any other expectation a 417."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no Expect: ignored, as aiohttp does
    if expect.lower() != "100-continue":
        detail = "the only expectation supported is 'Expect: 100-continue'"
        return problem(417, detail, instance=request.path)
    await request.writer.write(CONTINUE)
    request.writer.output_size = 0  # the interim answer is not the response's start
    return None


def with_expect(table: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """The routes of ``table``, each with ``expect_continue`` as its Expect handler."""
    return [_with_expect(route) for route in table]


def _with_expect(route: web.AbstractRouteDef) -> web.AbstractRouteDef:
    if isinstance(route, web.RouteDef):
        kwargs = {**route.kwargs, "expect_handler": expect_continue}
        return web.RouteDef(route.method, route.path, route.handler, kwargs)
    if isinstance(route, web.StaticDef):
        return web.StaticDef(
            route.prefix, route.path, {**route.kwargs, "expect_handler": expect_continue}
        )
    raise TypeError(f"cannot give an Expect handler to {route!r}")


UNROUTED = "unrouted"  # the name of the last route, which answers what nothing else matched


def route_name(request: web.Request) -> str:
    """The route's pattern for metrics and spans (never the path itself: ids would make every
    name unique); what no route matched, the last route included, is ``unmatched``."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.route.name == UNROUTED:
        return "unmatched"
    return resource.canonical


def add_unrouted(app: web.Application) -> None:
    """Add the route of last resort (call after every other route: it matches any path)."""
    app.router.add_route(
        hdrs.METH_ANY, "/{path:.*}", _unrouted, name=UNROUTED, expect_handler=expect_continue
    )


async def _unrouted(request: web.Request) -> web.StreamResponse:
    """405 naming the allowed methods if another route has this path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNROUTED:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
