"""``/dashboard``: a live page served by Pulse itself, and the data behind it.

The page (``static/dashboard/``, no third-party asset) asks once for an admin or read key, keeps
it in sessionStorage and sends it as a Bearer header: to ``GET /api/dashboard`` (one snapshot)
and ``GET /api/dashboard/events`` (Server-Sent Events, one snapshot a second, read with fetch
because EventSource cannot send a header). Snapshots are cached per tenant for a second, so
many open pages cost the same queries as one; the queue's part is the app's ``QueueStats``
snapshot, the same read the Prometheus collector serves. ``/dev/mail`` lists what the
development SMTP sink received, in ``pulse dev`` only: the CLI connects it (the HTTP layer
knows no sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec
from aiohttp import web

from pulse.core.breaker import BreakerPolicy
from pulse.core.errors import Forbidden, NotFound, Unavailable
from pulse.http import dashboard_view as view
from pulse.http.auth import bearer_key
from pulse.http.protocol import with_expect
from pulse.http.state import (
    KEY_ID,
    METRICS,
    POOL,
    PRINCIPAL,
    PROVIDERS,
    QUEUE_STATS,
    SETTINGS,
    TENANT_ID,
    TENANTS,
)
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.store.activity import ActivityStore
from pulse.store.errors import TRANSIENT_DB_ERRORS

STATIC = Path(__file__).parent / "static" / "dashboard"
WINDOW_S = 600
BUCKET_S = 10
EVENT_INTERVAL_S = 1.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
CACHE_S = 0.9
STALE_S = 60.0
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

routes = web.RouteTableDef()


class SinkMail(Protocol):
    """What the development SMTP sink hands over for each mail."""

    @property
    def mail_from(self) -> str: ...
    @property
    def rcpt_tos(self) -> list[str]: ...
    @property
    def subject(self) -> str: ...


class DevMail(msgspec.Struct, kw_only=True):
    received_at: datetime
    mail_from: str
    to: list[str]
    subject: str


class DevInbox:
    """The last mails the development sink received, newest last (thread-safe: the sink calls
    ``record`` from its own thread)."""

    def __init__(self, limit: int = 200) -> None:
        self._mails: deque[DevMail] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def record(self, mail: SinkMail) -> None:
        item = DevMail(
            received_at=datetime.now(UTC),
            mail_from=mail.mail_from,
            to=list(mail.rcpt_tos),
            subject=mail.subject,
        )
        with self._lock:
            self._mails.append(item)

    def mails(self) -> list[DevMail]:
        with self._lock:
            return list(self._mails)


class DevMailPage:
    """The app's slot for ``/dev/mail``: empty (404) until ``pulse dev`` connects its inbox."""

    def __init__(self) -> None:
        self.read: Callable[[], list[DevMail]] | None = None

    def connect(self, inbox: DevInbox) -> None:
        self.read = inbox.mails


class _Snapshots:
    """Snapshots per (tenant, operator), reused for ``CACHE_S``; the set of open streams."""

    def __init__(self) -> None:
        self.cached: dict[tuple[str, bool], tuple[float, view.Dashboard]] = {}
        self.streams: set[asyncio.Event] = set()


DEV_MAIL = web.AppKey("dev_mail", DevMailPage)
_SNAPSHOTS = web.AppKey("dashboard_snapshots", _Snapshots)


def setup(app: web.Application) -> None:
    """Register the dashboard's routes and state on ``app``."""
    app[DEV_MAIL] = DevMailPage()
    app[_SNAPSHOTS] = _Snapshots()
    app.on_shutdown.append(_close_streams)
    app.add_routes(with_expect([*routes, web.static("/dashboard/assets", STATIC)]))


@routes.get("/dashboard")
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


@routes.get("/api/dashboard")
async def snapshot(request: web.Request) -> web.Response:
    document = await _guarded(_snapshot(request, _viewer(request)))
    return web.Response(body=msgspec.json.encode(document), content_type="application/json")


@routes.get("/api/dashboard/events")
async def events(request: web.Request) -> web.StreamResponse:
    """A snapshot now and every second after, until the client or the server goes away."""
    viewer = _viewer(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    stop = asyncio.Event()
    streams = request.app[_SNAPSHOTS].streams
    streams.add(stop)
    try:
        await response.write(b"retry: 2000\n\n")
        while not stop.is_set():
            if not await _key_still_valid(request):  # revoked meanwhile: not one more snapshot
                await response.write(b"event: revoked\ndata: {}\n\n")
                break
            await response.write(await _event(request, viewer))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVENT_INTERVAL_S)
    except ConnectionError:  # the page went away
        pass
    finally:
        streams.discard(stop)
    return response


@routes.get("/dev/mail")
async def dev_mail(request: web.Request) -> web.Response:
    mails = _dev_mails(request)
    return web.Response(text=_mail_page(mails), content_type="text/html", headers=_PAGE_HEADERS)


@routes.get("/dev/mail.json")
async def dev_mail_json(request: web.Request) -> web.Response:
    body = msgspec.json.encode({"mails": _dev_mails(request)})
    return web.Response(body=body, content_type="application/json")


def _dev_mails(request: web.Request) -> list[DevMail]:
    read = request.app[DEV_MAIL].read
    if read is None:
        raise NotFound("the mail page exists in `pulse dev` only")
    if request.url.host not in LOOPBACK_HOSTS:  # a page elsewhere rebinding a name to us
        raise Forbidden("the mail page answers only to a loopback host name")
    return list(reversed(read()))


def _mail_page(mails: list[DevMail]) -> str:
    rows = "".join(
        f"<tr><td>{m.received_at:%H:%M:%S}</td><td>{html.escape(', '.join(m.to))}</td>"
        f"<td>{html.escape(m.subject)}</td><td>{html.escape(m.mail_from)}</td></tr>"
        for m in mails
    )
    empty = "" if mails else '<p class="empty">No mail yet: send the README\'s curl.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="3"><title>Pulse: development mail</title>'
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/dashboard/assets/dashboard.css">'
        '</head><body><header><h1>Development mail</h1><span class="muted">what the local SMTP'
        " sink received, newest first (refreshes every 3 s)</span></header><main><section>"
        '<table id="mails"><thead><tr><th>time (UTC)</th><th>to</th><th>subject</th><th>from</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>{empty}</section></main></body></html>"
    )


async def _key_still_valid(request: web.Request) -> bool:
    """Whether the stream's key still opens it, asked again before each snapshot, so a
    revocation ends an open stream as it refuses a new request. Unanswerable (PostgreSQL
    down): the snapshot is unavailable too, so nothing is sent either way."""
    key = bearer_key(request)
    if key is None:
        return False
    try:
        principal = await request.app[TENANTS].principal(key)
    except (*TRANSIENT_DB_ERRORS, *TRANSIENT_REDIS_ERRORS):
        return True
    return (
        principal is not None
        and principal.key_id == request[KEY_ID]
        and bool(principal.scopes & {"read", "admin"})
    )


def _viewer(request: web.Request) -> view.Viewer:
    principal = request[PRINCIPAL]
    if not principal.scopes & {"read", "admin"}:
        raise Forbidden("the dashboard needs a key with the 'read' or 'admin' scope")
    return view.Viewer(scopes=sorted(principal.scopes), operator=principal.operator)


async def _event(request: web.Request, viewer: view.Viewer) -> bytes:
    try:
        document = await _snapshot(request, viewer)
    except (*TRANSIENT_DB_ERRORS, *TRANSIENT_REDIS_ERRORS):
        detail = {"detail": "a backing service is unreachable; retrying"}
        return b"event: unavailable\ndata: " + msgspec.json.encode(detail) + b"\n\n"
    return b"event: snapshot\ndata: " + msgspec.json.encode(document) + b"\n\n"


async def _guarded(build: Awaitable[view.Dashboard]) -> view.Dashboard:
    try:
        return await build
    except (*TRANSIENT_DB_ERRORS, *TRANSIENT_REDIS_ERRORS):
        raise Unavailable("a backing service is unreachable; retry shortly") from None


async def _snapshot(request: web.Request, viewer: view.Viewer) -> view.Dashboard:
    cache = request.app[_SNAPSHOTS].cached
    key = (request[TENANT_ID], viewer.operator)
    hit = cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return msgspec.structs.replace(hit[1], viewer=viewer)
    document = await _build(request, viewer)
    now = time.monotonic()
    for stale in [k for k, (at, _) in cache.items() if now - at > STALE_S]:
        del cache[stale]  # tenants nobody watches any more
    cache[key] = (now, document)
    return document


async def _build(request: web.Request, viewer: view.Viewer) -> view.Dashboard:
    app, tenant_id = request.app, request[TENANT_ID]
    settings = app[SETTINGS]
    now_ms = time.time_ns() // 1_000_000
    store = ActivityStore(app[POOL])
    activity = await store.activity(tenant_id, now_ms - WINDOW_S * 1000, BUCKET_S)
    delivering = await store.delivering(None) if viewer.operator else []
    queue = await app[QUEUE_STATS].snapshot()
    if not viewer.operator:  # a tenant sees its own lanes, not the others' backlog
        queue = await app[QUEUE_STATS].of_tenant(tenant_id, queue)
    policy = BreakerPolicy(settings.breaker_failures, settings.breaker_cooldown_s)
    catalog = app[PROVIDERS]
    providers = sorted(catalog)
    return view.assemble(
        activity,
        queue,
        viewer,
        view.workers(queue, delivering, operator=viewer.operator),
        view.breakers(providers, activity.calls, _gauges(request), policy, datetime.now(UTC)),
        window_s=WINDOW_S,
        bucket_s=BUCKET_S,
    )


def _gauges(request: web.Request) -> dict[str, float]:
    """Breaker states of a worker running in this process (``pulse dev``), by provider."""
    found: dict[str, float] = {}
    for metric in request.app[METRICS].circuit_state.collect():
        for sample in metric.samples:
            found[sample.labels["provider"]] = sample.value
    return found


def open_streams(app: web.Application) -> int:
    """How many event streams are open (each ends at its next write once its page is gone)."""
    return len(app[_SNAPSHOTS].streams)


async def _close_streams(app: web.Application) -> None:
    """Shutdown must not wait for open pages: end every stream now."""
    for stop in app[_SNAPSHOTS].streams:
        stop.set()
