"""Hostile input, property-based: no request, however malformed, breaks the API.

For every endpoint the router serves (enumerated from the app, so a new endpoint is covered
without touching this file) and four kinds of hostility (arbitrary body bytes; arbitrary JSON
with invalid UTF-8, NUL, lone surrogates, repeated keys, huge integers and deep nesting, often
planted inside an otherwise valid body; hostile query strings; hostile headers and lying
framing), hypothesis checks what a user and an operator would:

- no answer is a 5xx, and every request gets an answer (unless it hung up mid-body);
- the API's log holds no traceback and no ERROR line for it (the client's fault is not ours);
- every committed notification is in the stream of its priority, every committed batch has its
  fan-out job there (checked against PostgreSQL and Redis after each endpoint's run).

The API runs as in production (``api_site``: an AppRunner on a loopback port) against the
run's real PostgreSQL and Redis; requests are raw bytes over a loopback socket. Before
hypothesis explores, a fixed corpus (tests/hostile.py: every known breaker planted on every key
of every seed body) runs in full, so the known classes of defect are checked on every run
whatever the examples drawn. A failing case reports each kind of defect once, with its request
(bodies cut short: one may be 200 kB of brackets), the answer and the log lines, as a short
message without a traceback.

Profiles: ``ci`` (the default) is derandomized and small, so CI is reproducible and quick (under
a minute when the API passes); it does not shrink, so a defect is reported as soon as it is
found, as it was found (shrinking, a request per step, took ten minutes).
``PULSE_TEST_HYPOTHESIS_PROFILE=local`` runs many more examples, randomized, shrinks each
failure to its smallest request, and remembers failures in a directory under the system's
temporary folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as profile
from hypothesis.database import DirectoryBasedExampleDatabase
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.cli.serve import api_site
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.http.app import create_app
from pulse.http.dashboard import open_streams
from pulse.http.openapi import build_spec
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore
from tests.hostile import KINDS, Context, Endpoint, corpus, requests_for
from tests.hostile_wire import WireRequest, WireResponse, exchange
from tests.queue_view import waiting

pytestmark = pytest.mark.integration

_QUIET = list(HealthCheck)  # slow examples and big inputs are the point here
profile.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=_QUIET, phases=(Phase.explicit, Phase.generate),
)  # fmt: skip
profile.register_profile(
    "local", max_examples=200, deadline=None,
    database=DirectoryBasedExampleDatabase(Path(tempfile.gettempdir()) / "pulse-hypothesis"),
    suppress_health_check=_QUIET,
)  # fmt: skip
PROFILE = profile.get_profile(os.environ.get("PULSE_TEST_HYPOTHESIS_PROFILE", "ci"))
ANSWER_TIMEOUT_S = 15.0  # a liveness bound (a request must be answered), not a speed check
LOG_RECORDS_SHOWN = 5  # per defect: the first few say what broke; the rest repeat it


def router_endpoints() -> list[Endpoint]:
    """Every method and path the app routes (HEAD aside: it is GET without a body; and the
    route of last resort, which any odd path or segment below reaches)."""
    defaults = Settings()
    app = create_app(defaults, channel_specs(defaults))
    found = []
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None:
            continue
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path += "/{filename}"
        found.append(Endpoint(route.method, path))
    return sorted(set(found), key=str)


ENDPOINTS = router_endpoints()
CASES = [pytest.param(e, k, id=f"{e} [{k}]") for e in ENDPOINTS for k in KINDS]

LOG_NOTIFICATION = {
    "recipient": "ops",
    "channel": "log",
    "payload": {"message": "m", "data": {"n": [1, 2]}},
    "priority": 3,
    "metadata": {"a": "b"},
}
EMAIL_NOTIFICATION = {
    "recipient": "someone@example.com",
    "channel": "email",
    "payload": {"subject": "s", "body": "b", "headers": {"X-Tag": "t"}},
    "fallback": [{"channel": "log", "recipient": "ops", "payload": {"message": "m"}}],
}
WEBHOOK_NOTIFICATION = {
    "recipient": "https://example.com/hook",
    "channel": "webhook",
    "payload": {"type": "t", "data": {"k": "v"}},
    "max_attempts": 2,
}
NOTIFICATIONS = [LOG_NOTIFICATION, EMAIL_NOTIFICATION, WEBHOOK_NOTIFICATION]
# A valid body per endpoint that takes one: hostile values are planted inside these.
SEEDS: dict[str, list[Any]] = {
    "POST /api/notifications": NOTIFICATIONS,
    "POST /api/notifications/": NOTIFICATIONS,
    "POST /api/notifications/batch": [
        {"items": [LOG_NOTIFICATION, EMAIL_NOTIFICATION]},
        {"template": {"channel": "log", "payload": {"message": "m"}}, "recipients": ["a", "b"]},
    ],
    "POST /api/dead-letters/replay": [{"channel": "email", "ids": [1], "limit": 10}],
    "POST /api/tenants": [{"name": "hostile", "operator": False}],
    "POST /api/keys": [{"name": "k", "scopes": ["read"]}],
    "PUT /api/routes/{channel}": [{"providers": ["smtp"]}],
    "PUT /api/receipts": [{"url": "https://example.com/receipts", "events": ["delivered"]}],
    "POST /providers/twilio/status/{id}": [b"MessageSid=SM1&MessageStatus=delivered"],
}


def query_names() -> dict[str, list[str]]:
    """Each operation's query parameters, from the OpenAPI document."""
    names: dict[str, list[str]] = {}
    for path, operations in build_spec()["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            query = [p["name"] for p in params if p["in"] == "query"]
            for form in {path, path.rstrip("/") or "/"}:
                names[f"{method.upper()} {form}"] = query
    return names


class Capture(logging.Handler):
    """Keeps every WARNING-or-worse record the process logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def captured_logs() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


@dataclass
class Site:
    port: int
    runner: web.AppRunner
    pool: asyncpg.Pool
    redis: Redis
    keys: QueueKeys
    tenant_id: str
    context: Context
    logs: Capture

    async def probe(self, request: WireRequest) -> tuple[WireResponse, list[logging.LogRecord]]:
        """One request; the answer, and what the API logged since the last probe: while
        handling this one (and anything an event stream left behind logged since)."""
        response = await exchange(self.port, request, ANSWER_TIMEOUT_S)
        await self._quiet()
        records, self.logs.records = self.logs.records, []
        return response, records

    async def _quiet(self) -> None:
        """Wait until the server holds no connection (its handler finished and logged) but
        event streams, which end at their next event (a second) once their client has gone."""
        server = self.runner.server
        for _ in range(2000):
            if server is None or len(server.connections) <= open_streams(self.runner.app):
                return
            await asyncio.sleep(0.005)

    async def unstreamed(self) -> set[str]:
        """Committed work of this tenant that no stream holds: queued notifications, and
        batches not yet fanned out, each looked for in the stream of its priority."""
        streamed = set((await waiting(self.redis, self.keys)).items())
        notifications = await self.pool.fetch(
            "SELECT 'notification' AS kind, id::text, priority FROM notifications"
            " WHERE tenant_id = $1 AND status = 'queued'"
            " UNION ALL SELECT 'batch', id::text, priority FROM batches"
            " WHERE tenant_id = $1 AND expanded_at IS NULL",
            self.tenant_id,
        )
        return {
            f"{row['kind']} {row['id']} (priority {row['priority']})"
            for row in notifications
            if (row["id"], row["priority"]) not in streamed
        }


@pytest.fixture(scope="module")
async def site(database_url: str, redis_url: str, captured_logs: Capture) -> AsyncIterator[Site]:
    prefix = f"ph{secrets.token_hex(4)}"
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=prefix,
        http_host="127.0.0.1",
        http_port=free_port("127.0.0.1"),
        reconcile_interval_s=3600,
        receipt_signing_key="hostile-receipt-signing-key-" + "k" * 16,
        twilio_auth_token="hostile-twilio-token",
        public_url="http://127.0.0.1:9",
        # Every channel deliverable, so every request gets past the 501 of an unconfigured one
        # into the channel's own checks (the API only checks these are set; no worker runs).
        twilio_account_sid="AC" + "0" * 32,
        twilio_from="+15005550006",
        twilio_whatsapp_from="+14155238886",
        fcm_service_account_file="never-read-by-the-api.json",
    )
    pool = await create_pool(database_url, 1, 2)
    redis = Redis.from_url(redis_url)
    keys = QueueKeys(prefix)
    try:
        tenant = await TenantStore(pool).create(
            f"hostile-{secrets.token_hex(4)}", operator=True
        )  # operator: POST /api/tenants gets past its scope check
        async with api_site(settings, Metrics()) as runner:
            known = await _known_ids(settings.http_port, tenant.api_key)
            context = Context(
                api_key=tenant.api_key,
                known=known | {"channel": [*channel_specs(settings), "batch"]},
                query_names=query_names(),
                seeds=SEEDS,
            )
            yield Site(
                settings.http_port, runner, pool, redis, keys, tenant.tenant_id, context,
                captured_logs,
            )  # fmt: skip
    finally:
        stale = [key async for key in redis.scan_iter(match=keys.tag + "*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
        await pool.close()


async def _known_ids(port: int, api_key: str) -> dict[str, list[str]]:
    """Ids that exist, so path parameters sometimes name real things: a notification of the
    tenant, and a spare key it may revoke (never the key the run authenticates with)."""
    auth = (b"Authorization", b"Bearer " + api_key.encode())
    json_type = (b"Content-Type", b"application/json")

    async def post(path: str, document: object) -> str:
        body = msgspec.json.encode(document)
        request = WireRequest("POST", path.encode(), (auth, json_type), body)
        response = await exchange(port, request, ANSWER_TIMEOUT_S)
        assert response.status in (201, 202), response.describe()
        created: str = msgspec.json.decode(response.body)["id"]
        return created

    notification = await post("/api/notifications/", LOG_NOTIFICATION)
    spare_key = await post("/api/keys", {"name": "spare", "scopes": ["read"]})
    return {"id": [notification, spare_key, "1"], "filename": ["swagger-ui.css", "index.html"]}


class Defect(AssertionError):
    """A request the API mishandled. There is a subclass per kind of defect and cause, since
    hypothesis tells bugs apart by exception type and place: each is then reported on its own."""


_DEFECTS: dict[str, type[Defect]] = {}


def defect(what: str, cause: str) -> type[Defect]:
    name = f"{what} [{cause}]"
    return _DEFECTS.setdefault(name, type(name, (Defect,), {}))


def _bad(record: logging.LogRecord) -> bool:
    return bool(record.exc_info or record.stack_info or record.levelno >= logging.ERROR)


def verdicts(
    request: WireRequest, response: WireResponse, records: list[logging.LogRecord]
) -> list[str]:
    """Every rule the answer to ``request`` breaks (none, for a sane answer)."""
    bad = [record for record in records if _bad(record)]
    status = response.status or 0
    reached_pulse = "x-request-id" in response.headers  # Pulse's middleware sets it on every answer
    broken = {
        "never answered": response.timed_out,
        "connection closed without an answer": response.status is None
        and not (request.hangs_up or response.timed_out),
        "Pulse answered with a server error": status >= 500 and reached_pulse,
        "aiohttp answered with a server error before Pulse's code": status >= 500
        and not reached_pulse,
        "Pulse logged a traceback or ERROR": any(not r.name.startswith("aiohttp.") for r in bad),
        "aiohttp's HTTP layer logged a traceback or ERROR": any(
            r.name.startswith("aiohttp.") for r in bad
        ),
    }
    return [rule for rule, is_broken in broken.items() if is_broken]


def _cut(text: str, size: int = 3000) -> str:
    """At most ``size`` characters of ``text`` (its head and tail: where a traceback says most)."""
    if len(text) <= size:
        return text
    return f"{text[: size // 2]}\n...({len(text)} characters)...\n{text[-size // 2 :]}"


def _cause(records: list[logging.LogRecord]) -> str:
    """The class of the first exception logged, which names the defect best."""
    for record in records:
        if record.exc_info and record.exc_info[0] is not None:
            return record.exc_info[0].__name__
    return "no traceback"


def check(request: WireRequest, response: WireResponse, records: list[logging.LogRecord]) -> None:
    """What must hold for any request at all; raises a ``Defect`` naming what broke."""
    broken = verdicts(request, response, records)
    if not broken:
        return
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    log = [_cut(formatter.format(r)).replace("\n", "\n      ") for r in records if _bad(r)]
    log = log[:LOG_RECORDS_SHOWN]
    raise defect(broken[0], _cause(records))(
        f"{'; '.join(broken)}\n  request: {request.describe()}\n"
        f"  answer: {response.describe()}\n  log: {chr(10).join(log) or '(nothing)'}"
    )


async def corpus_defects(site: Site, requests: list[WireRequest]) -> dict[str, str]:
    """Send every request of the fixed corpus; the first failure of each kind of defect."""
    found: dict[str, str] = {}
    for request in requests:
        try:
            check(request, *await site.probe(request))
        except Defect as exc:
            found.setdefault(type(exc).__name__, str(exc))
    return found


def _defects_of(failure: BaseException | None) -> list[str]:
    """Each failure hypothesis found (it groups them when it found several)."""
    if failure is None:
        return []
    if isinstance(failure, BaseExceptionGroup):
        return [text for inner in failure.exceptions for text in _defects_of(inner)]
    notes = "\n".join(getattr(failure, "__notes__", []))
    return [_cut(f"{type(failure).__name__}: {failure}\n{notes}", 20_000)]


@pytest.mark.parametrize(("endpoint", "kind"), CASES)
async def test_hostile_requests_get_no_5xx_no_traceback_and_lose_nothing(
    site: Site, endpoint: Endpoint, kind: str
) -> None:
    # Given the API, and the committed work it had already left unstreamed (if any)
    loop = asyncio.get_running_loop()
    unstreamed_before = await site.unstreamed()

    @PROFILE
    @given(requests_for(endpoint, kind, site.context))
    def property_holds(request: WireRequest) -> None:
        probe = asyncio.run_coroutine_threadsafe(site.probe(request), loop)
        check(request, *probe.result(timeout=ANSWER_TIMEOUT_S * 4))

    # When the fixed corpus, then hypothesis's requests are sent (hypothesis runs in a thread:
    # the API serves on this loop)
    known = await corpus_defects(site, corpus(endpoint, kind, site.context))
    failure: BaseException | None = None
    try:
        await asyncio.to_thread(property_holds)
    except BaseException as exc:  # reported below, with the corpus's and the stream check's
        failure = exc
    lost = await site.unstreamed() - unstreamed_before

    # Then every request was answered sanely, and nothing committed is missing from Redis
    report = [f"corpus: {name}: {text}" for name, text in known.items()]
    report += [f"hypothesis: {text}" for text in _defects_of(failure)]
    report += [f"committed but not streamed: {sorted(lost)}"] if lost else []
    if report:  # a short message, not a traceback with a repr of everything in it
        pytest.fail(f"{len(report)} defects\n\n" + "\n\n".join(report), pytrace=False)


def test_every_openapi_operation_is_routed() -> None:
    """The router is the list the property test walks: it must cover the documented API."""
    routed = {str(endpoint) for endpoint in ENDPOINTS}
    documented = {
        f"{method.upper()} {path}"
        for path, operations in build_spec()["paths"].items()
        for method in operations
    }
    assert documented <= routed, documented - routed
