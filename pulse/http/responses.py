"""Small helpers every handler shares: decoding JSON bodies into msgspec types (422 naming the
field), JSON answers, and database calls that map an outage to 503 rather than a 500."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, Unavailable
from pulse.http.validation import explain
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


def decode_body(body: bytes, kind: type[T]) -> T:
    """An empty body counts as ``{}``, so every field's default applies."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise explain(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
