"""Bad bytes are never a 500: invalid UTF-8, odd headers, deep nesting, repeated keys, NUL bytes,
oversized declared bodies and vanishing clients each get a 4xx problem (or nothing), with no
traceback in the log and nothing written."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.cli.serve import api_site
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import Client
from tests.queue_view import waiting

pytestmark = pytest.mark.integration

# Every endpoint that takes a JSON body, with a body whose one string holds invalid UTF-8.
BAD_UTF8 = [
    ("post", "/api/notifications/", b'{"recipient": "caf\xc3", "channel": "email"}'),
    ("post", "/api/notifications/batch", b'{"items": [{"recipient": "\xff\xfe"}]}'),
    ("post", "/api/keys", b'{"name": "k\xed\xa0\x80"}'),
    ("post", "/api/tenants", b'{"name": "t\xff"}'),
    ("put", "/api/routes/email", b'{"providers": ["smtp\xc0"]}'),
    ("put", "/api/receipts", b'{"url": "https://example.com/\xff"}'),
    ("post", "/api/dead-letters/replay", b'{"channel": "email\xff"}'),
]


@pytest.fixture
async def operator_tenant(pool: asyncpg.Pool) -> NewTenant:
    return await TenantStore(pool).create(f"op-{secrets.token_hex(4)}", operator=True)


@pytest.fixture
def operator(operator_tenant: NewTenant) -> dict[str, str]:
    """An operator tenant's admin key: every endpoint is open to it."""
    return {
        "Authorization": f"Bearer {operator_tenant.api_key}",
        "Content-Type": "application/json",
    }


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


async def problem_of(response: Any) -> dict[str, Any]:
    assert response.content_type == "application/problem+json"
    document: dict[str, Any] = msgspec.json.decode(await response.read())
    return document


async def raw_exchange(
    client: Client | tuple[str, int], request: bytes, *, close_after_send: bool = False
) -> bytes:
    """Send bytes as they are (aiohttp's client would refuse or fix them); return the answer."""
    host, port = client if isinstance(client, tuple) else (client.server.host, client.server.port)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        if close_after_send:
            return b""
        return await asyncio.wait_for(reader.read(65536), 30)  # a guard against hanging
    finally:
        writer.close()


async def written(pool: asyncpg.Pool, redis: Redis, settings: Settings, tenant_id: str) -> int:
    rows: int = await pool.fetchval(
        "SELECT (SELECT count(*) FROM notifications WHERE tenant_id = $1)"
        " + (SELECT count(*) FROM batches WHERE tenant_id = $1)",
        tenant_id,
    )
    entries = await waiting(redis, QueueKeys(settings.key_prefix))  # whichever lane
    return rows + len(entries)


@pytest.mark.parametrize(("method", "path", "body"), BAD_UTF8, ids=[c[1] for c in BAD_UTF8])
async def test_invalid_utf8_in_a_json_string_is_400_on_every_body_endpoint(
    client: Client,
    operator: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: bytes,
) -> None:
    response = await client.request(method, path, data=body, headers=operator)

    assert response.status == 400, await response.text()
    assert "UTF-8" in (await problem_of(response))["detail"]
    no_errors_logged(caplog)


async def test_non_ascii_authorization_is_401_before_authentication(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    request = (
        b"GET /api/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer \xc3\xa9t\xff\x80\r\nConnection: close\r\n\r\n"
    )

    answer = await raw_exchange(client, request)

    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    no_errors_logged(caplog)


async def test_deeply_nested_batch_is_refused_without_recursion_error(
    client: Client, operator: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    levels = 50_000
    body = b'{"items": ' + b"[" * levels + b"]" * levels + b"}"

    response = await client.post("/api/notifications/batch", data=body, headers=operator)

    assert response.status in (400, 422)
    assert (await problem_of(response))["detail"]
    no_errors_logged(caplog)


REPEATED = [
    (
        "/api/notifications/",
        b'{"recipient": "a@example.com", "recipient": "c@example.com", "channel": "email",'
        b' "payload": {"subject": "s", "body": "b"}}',
        "/recipient",
    ),
    (
        "/api/notifications/",
        b'{"recipient": "a@example.com", "channel": "email",'
        b' "payload": {"subject": "s", "body": "b", "subject": "t"}}',
        "/payload/subject",
    ),
    (
        "/api/notifications/batch",
        b'{"items": [{"recipient": "a@example.com", "channel": "log",'
        b' "payload": {"message": "m", "data": {"a~/b": 1, "a~/b": 2}}}]}',
        "/items/0/payload/data/a~0~1b",
    ),
    ("/api/keys", b'{"name": "one", "scopes": ["read"], "name": "two"}', "/name"),
]


@pytest.mark.parametrize(("path", "body", "pointer"), REPEATED, ids=[c[2] for c in REPEATED])
async def test_a_repeated_key_is_400_naming_it(
    client: Client,
    operator: dict[str, str],
    operator_tenant: NewTenant,
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: bytes,
    pointer: str,
) -> None:
    response = await client.post(path, data=body, headers=operator)

    assert response.status == 400, await response.text()
    problem = await problem_of(response)
    assert problem["errors"][0]["pointer"] == pointer
    assert "repeated" in problem["detail"]
    assert await written(pool, redis, settings, operator_tenant.tenant_id) == 0
    no_errors_logged(caplog)


async def test_a_declared_length_above_the_limit_is_413_before_the_body_is_read(
    client: Client, auth: dict[str, str], settings: Settings
) -> None:
    # Given headers that announce a body one byte over the limit, and no body sent at all
    request = (
        b"POST /api/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {auth['Authorization']}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {settings.max_body_bytes + 1}\r\n\r\n".encode()
    )

    # Then the answer comes without waiting for the body
    answer = await raw_exchange(client, request)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer


async def test_a_client_that_disconnects_mid_body_is_no_error(
    settings: Settings, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the API served as `pulse api` serves it (handlers run on when a client leaves)
    served = msgspec.structs.replace(
        settings, http_host="127.0.0.1", http_port=free_port("127.0.0.1")
    )
    metrics = Metrics()
    async with api_site(served, metrics):
        request = (
            b"POST /api/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: {auth['Authorization']}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            + b'{"recipient": "someone@example.com", "channel": "em'
        )

        # When a client sends part of its body and leaves
        await raw_exchange(("127.0.0.1", served.http_port), request, close_after_send=True)
        route = 'route="/api/notifications/"'
        counted: list[str] = []
        for _ in range(600):
            exposition = metrics.exposition().decode()
            counted = [
                line for line in exposition.splitlines() if "_count" in line and route in line
            ]
            if counted:
                break
            await asyncio.sleep(0.05)

    # Then it is counted as the client's doing (499), never as a server error, and not logged
    assert any('status="499"' in line for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
    no_errors_logged(caplog)


NUL_BODIES = [
    ("/api/notifications/", {"recipient": "a@example.com", "channel": "email",
                             "payload": {"subject": "s\u0000", "body": "b"}}, "/payload/subject"),
    ("/api/notifications/", {"recipient": "a@example.com", "channel": "email",
                             "payload": {"subject": "s", "body": "b"},
                             "metadata": {"order": "4\u00002"}}, "/metadata/order"),
    ("/api/keys", {"name": "nul\u0000key"}, "/name"),
    ("/api/tenants", {"name": "nul\u0000tenant"}, "/name"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "pointer"), NUL_BODIES, ids=[c[2] for c in NUL_BODIES])
async def test_nul_characters_are_refused_naming_the_field_before_any_query(
    client: Client,
    operator: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
    pointer: str,
) -> None:
    response = await client.post(path, json=body, headers=operator)

    assert response.status in (400, 422)
    problem = await problem_of(response)
    assert problem["errors"][0]["pointer"] == pointer
    assert "Error" not in problem["detail"]
    assert "UTF8" not in problem["detail"]
    no_errors_logged(caplog)


QUERY_FILTERS = [
    ("/api/notifications/?recipient=a%00b", "/recipient"),
    ("/api/notifications/?metadata.order=4%002", "/metadata.order"),
    ("/api/dead-letters?channel=email%00", "/channel"),
    ("/api/dead-letters?error_class=%00", "/error_class"),
]


@pytest.mark.parametrize(("path", "pointer"), QUERY_FILTERS, ids=[c[1] for c in QUERY_FILTERS])
async def test_nul_characters_in_query_filters_are_refused_naming_the_parameter(
    client: Client, operator: dict[str, str], path: str, pointer: str
) -> None:
    response = await client.get(path, headers=operator)

    assert response.status in (400, 422)
    problem = await problem_of(response)
    assert problem["errors"][0]["pointer"] == pointer
    assert "Error" not in problem["detail"]
    assert "UTF8" not in problem["detail"]


async def test_an_integer_the_stream_cannot_carry_is_422_and_nothing_is_committed(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {
        "recipient": "a@example.com",
        "channel": "log",
        "payload": {"message": "m", "data": {"ok": 2**63 - 1, "big": [1, 2**64 + 1]}},
    }

    single = await client.post("/api/notifications/", json=body, headers=auth)
    batch = await client.post("/api/notifications/batch", json={"items": [body]}, headers=auth)

    assert single.status == 422
    assert (await problem_of(single))["errors"][0]["pointer"] == "/payload/data/big/1"
    assert batch.status == 422
    assert (await problem_of(batch))["errors"][0]["pointer"] == "/0/payload/data/big/1"
    assert await written(pool, redis, settings, tenant.tenant_id) == 0
    no_errors_logged(caplog)


# Requests aiohttp's HTTP parser refuses before any of Pulse's code runs, and the error it names.
UNPARSABLE = [
    (b"X-Tag: a\nb\r\n", "BadHttpMessage"),  # a bare LF inside a header
    (b"X-Tag: a\x00b\r\n", "BadHttpMessage"),  # a NUL inside a header
    (b"X-Tag: " + b"a" * 9000 + b"\r\n", "LineTooLong"),  # over aiohttp's 8190 bytes
    (b"", "InvalidURLError"),  # with a raw \xff in the query (see below)
]


@pytest.mark.parametrize(("header", "error"), UNPARSABLE, ids=[e for _, e in UNPARSABLE])
async def test_a_request_the_http_parser_refuses_is_400_and_one_quiet_log_line(
    settings: Settings, caplog: pytest.LogCaptureFixture, header: bytes, error: str
) -> None:
    # Given the API served as `pulse api` serves it, and a request its HTTP parser refuses
    served = msgspec.structs.replace(
        settings, http_host="127.0.0.1", http_port=free_port("127.0.0.1")
    )
    target = b"/api/notifications/" + (b"?x=\xff" if not header else b"")
    request = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n"
    caplog.set_level(logging.INFO, "aiohttp.server")

    # When it is sent
    async with api_site(served, Metrics()):
        answer = await raw_exchange(("127.0.0.1", served.http_port), request)

    # Then the client gets a 400, and the log one line naming the refusal, without the
    # client's bytes (no traceback, nothing at ERROR: a client cannot flood the log)
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:200]
    no_errors_logged(caplog)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1, lines
    assert f"{error} (400)" in lines[0]
    assert not any(raw in lines[0] for raw in ("\n", "\\x", "aaaa")), lines


# A routed path, one no route matches (aiohttp's own 404), one with another method (its 405).
EXPECTING = [b"POST /api/notifications/", b"POST /nowhere", b"PATCH /api/notifications/"]


@pytest.mark.parametrize("target", EXPECTING, ids=[t.decode() for t in EXPECTING])
@pytest.mark.parametrize("expect", [b"\x80", b"\xff\xfe", b"something-else"])
async def test_an_expectation_other_than_100_continue_is_417_problem(
    client: Client,
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    target: bytes,
    expect: bytes,
) -> None:
    request = (
        target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {auth['Authorization']}\r\n".encode()
        + b"Content-Type: application/json\r\nExpect: "
        + expect
        + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )

    answer = await raw_exchange(client, request)

    assert answer.startswith(b"HTTP/1.1 417"), answer[:300]
    assert b"application/problem+json" in answer
    assert b"100-continue" in answer  # the detail says what is supported
    no_errors_logged(caplog)


async def test_expect_100_continue_still_gets_its_interim_answer(
    client: Client, auth: dict[str, str]
) -> None:
    body = {"recipient": "ops", "channel": "log", "payload": {"message": "m"}}

    response = await client.post("/api/notifications/", json=body, headers=auth, expect100=True)

    assert response.status == 202, await response.text()


# A Twilio status callback whose body is not the form Twilio posts.
NOT_A_FORM = [
    (b"multipart/form-data", b"MessageSid=SM1&MessageStatus=delivered", 415),  # no boundary
    (b"multipart/form-data; boundary=x", b"--x\r\n\r\n--x--\r\n", 415),
    (b"application/json", b'{"MessageSid": "SM1"}', 415),
    (b"application/x-www-form-urlencoded; charset=\xff", b"MessageSid=SM1", 415),
    (b"application/x-www-form-urlencoded", b"MessageSid=SM\xff&a=\xfe", 400),
    (b"application/x-www-form-urlencoded", b"MessageSid=SM%ff", 400),
]


@pytest.mark.parametrize(("content_type", "body", "status"), NOT_A_FORM)
async def test_a_twilio_callback_that_is_not_a_utf8_form_is_refused_as_a_problem(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    content_type: bytes,
    body: bytes,
    status: int,
) -> None:
    # Given the API with Twilio callbacks configured, served as `pulse api` serves it
    served = msgspec.structs.replace(
        settings, http_host="127.0.0.1", http_port=free_port("127.0.0.1"),
        twilio_auth_token="callback-token", public_url="https://pulse.example.com",
        twilio_account_sid="AC" + "0" * 32, twilio_from="+15005550006",
    )  # fmt: skip
    request = (
        b"POST /providers/twilio/status/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nX-Twilio-Signature: x\r\nConnection: close\r\n"
        + b"Content-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )

    # When a callback arrives whose body is not a UTF-8 urlencoded form
    async with api_site(served, Metrics()):
        answer = await raw_exchange(("127.0.0.1", served.http_port), request)

    # Then it is refused as a problem (not a 500), before its signature is even checked
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:300]
    assert b"application/problem+json" in answer
    no_errors_logged(caplog)
