"""X-Request-ID cannot forge log lines: only a short, safe id is kept, anything else is replaced
by a generated one, and the answer echoes the id that the log lines actually carry."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.http.edges import HEADER, safe_request_id
from pulse.logs import FORMAT, RequestIdFilter
from pulse.metrics import Metrics
from tests.conftest import Client

pytestmark = pytest.mark.integration

SAFE = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")
GENERATED = re.compile(r"^[0-9a-f]{32}$")
probe_logger = logging.getLogger("pulse.tests.request_ids")

HOSTILE = [
    pytest.param("ok] WARNING pulse.http: admin key revoked", id="forged-line-in-one"),
    pytest.param("id with spaces", id="spaces"),
    pytest.param("x" * 129, id="oversized"),
    pytest.param("caf\u00e9-\u202e-rtl", id="non-ascii"),
    pytest.param("%0d%0aINFO forged", id="percent-encoded-crlf"),
]


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Every log line, formatted as Pulse's processes format them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = probe_logger.level
    probe_logger.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    probe_logger.setLevel(previous)


async def logs_a_line(request: web.Request) -> web.Response:
    probe_logger.info("probe line")
    return web.Response(text="logged")


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[Client]:
    """The real application (its middlewares), with one extra route that writes a log line."""
    app = create_app(settings, channel_specs(settings), Metrics())
    app.router.add_get("/probe-log", logs_a_line)
    async with TestClient(TestServer(app)) as client:
        yield client


def logged_ids(text: str) -> list[str]:
    return re.findall(r"\[([^\]]*)\]: probe line", text)


async def test_a_safe_client_id_is_kept_echoed_and_logged(
    app_client: Client, log_text: io.StringIO
) -> None:
    response = await app_client.get("/probe-log", headers={HEADER: "trace-01:abc.DEF_9"})

    assert response.status == 200
    assert response.headers[HEADER] == "trace-01:abc.DEF_9"
    assert logged_ids(log_text.getvalue()) == ["trace-01:abc.DEF_9"]


@pytest.mark.parametrize("given", HOSTILE)
async def test_an_unsafe_id_never_reaches_a_log_line(
    app_client: Client, log_text: io.StringIO, given: str
) -> None:
    response = await app_client.get("/probe-log", headers={HEADER: given})

    assert response.status == 200
    used = response.headers[HEADER]
    assert GENERATED.match(used), used
    text = log_text.getvalue()
    assert given not in text
    assert logged_ids(text) == [used]
    assert text.count("\n") == 1  # one line, nothing spliced in


async def raw_request(port: int, request_id: bytes) -> bytes:
    """Bytes no HTTP client library would send: raw CR, LF, ESC inside the header value."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /probe-log HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + HEADER.encode()
        + b": "
        + request_id
        + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize(
    "raw",
    [b"a\rINFO forged", b"a\nINFO forged", b"a\x1b[2K\x1b[1Gforged", b"a\x00forged", b"\xff\xfe"],
)
async def test_control_bytes_in_the_id_never_reach_a_log_line(
    app_client: Client, log_text: io.StringIO, raw: bytes
) -> None:
    assert app_client.port is not None
    answer = await raw_request(app_client.port, raw)

    head = answer.split(b"\r\n\r\n", 1)[0]
    status = int(head.split(b" ", 2)[1])
    echoed = re.findall(rb"(?i)\r\nx-request-id: ([^\r]*)", head)
    text = log_text.getvalue()
    assert b"forged" not in head
    assert raw.decode("latin-1") not in text
    assert not re.search(r"[\r\x00\x1b]", text)  # aiohttp may quote the bytes, escaped
    assert not [line for line in text.splitlines() if line.lstrip().startswith(("INFO", "forged"))]
    if status == 400:  # the HTTP parser refused the bytes: the app never saw the request
        assert echoed == []
        assert logged_ids(text) == []
    else:  # the app served it, under an id of its own making
        assert status == 200
        assert len(echoed) == 1
        assert GENERATED.match(echoed[0].decode())
        assert logged_ids(text) == [echoed[0].decode()]


@pytest.mark.parametrize(
    "given",
    ["", "a\r\nb", "a\nb", "a\x1b[31m", "a\u2028b", "x" * 129, "a b", "a]b", "\u0661\u0662"],
)
def test_only_the_safe_charset_is_kept(given: str) -> None:
    used = safe_request_id(given)

    assert used != given
    assert GENERATED.match(used)


@pytest.mark.parametrize("given", ["abc", "x" * 128, "0af7651916cd43dd8448eb211c80319c", "a/b+c="])
def test_safe_ids_are_kept(given: str) -> None:
    assert safe_request_id(given) == given
    assert SAFE.match(given)


def test_no_header_gets_a_generated_id() -> None:
    assert GENERATED.match(safe_request_id(None))
