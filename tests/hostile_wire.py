"""A raw HTTP/1.1 exchange over a loopback socket: an ordinary client refuses to send most of
what the property test sends (bytes outside ASCII in headers, lying framing, bare LF)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

# How the request frames its body: an honest Content-Length, or one of the lies.
LENGTHS = ("true", "short", "long", "absent", "junk", "twice", "negative", "chunked", "bad-chunk")
JSON_TYPE = b"application/json"
CONTENT_TYPES = [
    JSON_TYPE,
    b"application/json; charset=latin-1",
    b"application/json; charset=utf-16",
    b"APPLICATION/JSON",
    b"application/problem+json",
    b"text/plain",
    b"multipart/form-data",
    b"application/x-www-form-urlencoded",
    b"",
    b"application/json; boundary=\xff",
]


@dataclass(frozen=True)
class WireRequest:
    method: str
    target: bytes  # path and query, as sent
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    length: str = "true"

    @property
    def hangs_up(self) -> bool:
        """Promises more body than it sends, then closes its side: no answer is due."""
        return self.length == "long"

    def describe(self) -> str:
        """Short enough to read in a failure report (a body may be 200 kB of brackets)."""
        body = (
            self.body
            if len(self.body) <= 400
            else self.body[:400] + b"...(%d bytes)" % len(self.body)
        )
        headers = [(name, value[:200]) for name, value in self.headers]
        return (
            f"{self.method} {self.target[:300]!r} length={self.length} "
            f"headers={headers!r} body={body!r}"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.describe())

    def encode(self) -> bytes:
        head = [
            f"{self.method} ".encode() + self.target + b" HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Connection: close",
        ]
        head += [name + b": " + value for name, value in self.headers]
        head += _framing(self.length, len(self.body))
        return b"\r\n".join(head) + b"\r\n\r\n" + _body(self.length, self.body)


def _framing(length: str, size: int) -> list[bytes]:
    lines = {
        "true": [b"Content-Length: %d" % size],
        "short": [b"Content-Length: %d" % max(0, size - 1)],
        "long": [b"Content-Length: %d" % (size + 100)],
        "absent": [],
        "junk": [b"Content-Length: 1x2"],
        "twice": [b"Content-Length: %d" % size, b"Content-Length: %d" % (size + 1)],
        "negative": [b"Content-Length: -1"],
        "chunked": [b"Transfer-Encoding: chunked"],
        "bad-chunk": [b"Transfer-Encoding: chunked", b"Content-Length: %d" % size],
    }
    return lines[length]


def _body(length: str, body: bytes) -> bytes:
    if length == "chunked":
        return (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    if length == "bad-chunk":
        return b"%x\r\n" % (len(body) + 7) + body + b"\r\n0\r\n\r\n"
    return body


@dataclass(frozen=True)
class WireResponse:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timed_out: bool = False

    def describe(self) -> str:
        if self.timed_out:
            return "no answer before the client gave up"
        if self.status is None:
            return "connection closed without an answer"
        return f"{self.status} {self.headers.get('content-type', '')} {self.body[:600]!r}"


async def exchange(port: int, request: WireRequest, timeout_s: float) -> WireResponse:
    """Send ``request`` on a new loopback connection; read the whole answer (the server closes
    after it, as the request says ``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.encode())
        if request.hangs_up:
            writer.write_eof()
        try:
            raw = await asyncio.wait_for(_read_all(reader), timeout_s)
        except TimeoutError:
            return WireResponse(None, timed_out=True)
    finally:
        writer.close()
    return parse_response(raw)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes; of an event stream (which a server never closes),
    the head and the first event, as a page that reads one snapshot and goes away."""
    raw = b""
    while chunk := await _read_some(reader):
        raw += chunk
        if _first_event_read(raw):
            break
    return raw


def _first_event_read(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    streaming = b"\ncontent-type: text/event-stream" in head.lower()
    return streaming and body.count(b"\n\n") >= 2  # "retry: ..." and the first event


async def _read_some(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(65536)
    except ConnectionResetError:
        return b""


def parse_response(raw: bytes) -> WireResponse:
    """The final answer in ``raw`` (interim ``100 Continue`` answers skipped)."""
    while raw.startswith(b"HTTP/1.1 1"):
        raw = raw.partition(b"\r\n\r\n")[2]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/"):
        return WireResponse(None)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return WireResponse(int(lines[0].split()[1]), headers, body)
