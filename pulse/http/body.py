"""Reading a request's body: the one way every handler gets its bytes, its JSON or its form.

A declared ``Content-Length`` above the route's limit is refused (413) before a byte of the
body is read, so a client announcing a huge body is answered at once, not after a timeout. A
client that goes away mid-body raises ``ClientGone``: nobody is left to answer, and it is
not the server's error (the problem middleware counts it as 499, quietly).
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from pulse.http.decoding import MalformedBody, decode_json
from pulse.http.state import SETTINGS

T = TypeVar("T")
FORM_TYPE = "application/x-www-form-urlencoded"
UTF8 = ("utf-8", "utf8")


class ClientGone(Exception):
    """The client closed its connection before its body arrived."""


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The whole body, at most ``limit`` bytes (``PULSE_MAX_BODY_BYTES`` unless given)."""
    limit = limit or request.app[SETTINGS].max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit, declared)
    try:
        body = await request.read()
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError derives from it
        raise ClientGone from None
    if len(body) > limit:  # a chunked body declares no length
        raise too_large(limit, len(body))
    return body


async def read_json(
    request: web.Request, kind: type[T], limit: int | None = None, deep_at: str = "$"
) -> T:
    """The body decoded into ``kind``; an empty body counts as ``{}``, so defaults apply."""
    return decode_json(await read_body(request, limit) or b"{}", kind, deep_at)


async def read_form(request: web.Request) -> list[tuple[str, str]]:
    """A urlencoded UTF-8 form (what Twilio posts): its pairs, in order, read as aiohttp's
    ``post()`` reads them. Another media type or charset is a 415 and bytes that are not UTF-8
    a 400, where ``post()`` raised (multipart without a boundary, an unknown charset)."""
    charset = (request.charset or "utf-8").lower()
    if request.content_type != FORM_TYPE or charset not in UTF8:
        raise web.HTTPUnsupportedMediaType(text=f"send the form as 'Content-Type: {FORM_TYPE}'")
    body = await read_body(request)
    try:
        return parse_qsl(body.rstrip().decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise MalformedBody("the form is not valid UTF-8") from None


def too_large(limit: int, size: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
