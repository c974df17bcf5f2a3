"""Small helpers every handler shares: JSON answers.

Outages (PostgreSQL or Redis unreachable) become 503 in the problem middleware, not here.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from pulse.core.signatures import SecretGeneration
from pulse.core.timeutil import utcnow

T = TypeVar("T")


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(document), content_type="application/json"
    )


def rotation_in_overlap(current: SecretGeneration) -> web.HTTPConflict:
    """409 for a second rotation while the first one's overlap runs: both secrets sign until it
    ends, and a third would silently drop the one receivers may still verify with."""
    until = current.previous_until(utcnow())
    wait_s = 1 if until is None else max(1, math.ceil((until - utcnow()).total_seconds()))
    return web.HTTPConflict(
        headers={"Retry-After": str(wait_s)},
        text="the secret was rotated less than 24 hours ago and both secrets still sign; "
        "rotate again once that overlap is over (Retry-After)",
    )
