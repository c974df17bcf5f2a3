"""Small helpers every handler shares: JSON answers.

Outages (PostgreSQL or Redis unreachable) become 503 in the problem middleware, not here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

T = TypeVar("T")


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(document), content_type="application/json"
    )
