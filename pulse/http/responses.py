"""Small helpers every handler shares: JSON bodies, and database calls that map an outage to
503 rather than letting it become a 500."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from pulse.errors import Unavailable
from pulse.store.errors import TRANSIENT_DB_ERRORS

T = TypeVar("T")


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(document), content_type="application/json"
    )


async def from_db(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except TRANSIENT_DB_ERRORS:
        raise Unavailable("the database is unreachable; retry shortly") from None
