"""Hostile HTTP requests for the property test, per endpoint and kind: hypothesis strategies,
and a fixed corpus of the inputs known to have broken Pulse (tried on every run, in full)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import msgspec
from hypothesis import strategies as st

from tests.hostile_json import (
    CANONICAL_DOCUMENTS,
    deep_json,
    json_value,
    planted_corpus,
    shaped_json,
)
from tests.hostile_wire import CONTENT_TYPES, JSON_TYPE, LENGTHS, WireRequest


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {name} placeholders, as the router has it

    @property
    def params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Context:
    """What the strategies need to know about the running API."""

    api_key: str
    known: Mapping[str, Sequence[str]]  # path parameter name -> values that exist
    query_names: Mapping[str, Sequence[str]]  # "GET /path" -> its query parameters
    seeds: Mapping[str, Sequence[Any]]  # "POST /path" -> valid bodies (bytes: sent as they are)


_ODD_SEGMENTS = [
    "..",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%00",
    "%ff",
    "-1",
    "0",
    "9" * 40,
    "00000000-0000-0000-0000-000000000000",
    "%E2%80%A8",
    "a%2Fb",
    "%25",
]
segment = st.one_of(
    st.sampled_from(_ODD_SEGMENTS),
    st.binary(min_size=1, max_size=40).map(lambda raw: quote_from_bytes(raw, safe="")),
    st.uuids().map(str),
    st.integers().map(str),
)
query_value = st.one_of(
    st.sampled_from(
        [
            "",
            "%00",
            "%ff",
            "9" * 40,
            "-1",
            "1e9999",
            "2024-13-45T99:99:99",
            "queued",
            "%E2%80%A8",
            "a%0D%0Ab",
        ]
    ),
    st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe="")),
)


@st.composite
def target(draw: st.DrawFn, endpoint: Endpoint, context: Context, query: bool) -> bytes:
    path = endpoint.path
    for name in endpoint.params:
        known = list(context.known.get(name, ()))
        value = draw(st.one_of(st.sampled_from(known), segment) if known else segment)
        path = path.replace("{" + name + "}", value)
    if not query:
        return path.encode()
    names = [*context.query_names.get(str(endpoint), ()), "metadata.a", "x"]
    pairs = draw(st.lists(st.tuples(st.sampled_from(names), query_value), max_size=5))
    raw = draw(st.sampled_from([b"", b"", b"", b"&&", b"\xff", b"%", b"#x", b";a=b"]))
    return path.encode() + b"?" + "&".join(f"{n}={v}" for n, v in pairs).encode() + raw


def bearer(context: Context) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Bearer " + context.api_key.encode())


def seed_bodies(endpoint: Endpoint, context: Context) -> st.SearchStrategy[bytes]:
    seeds = context.seeds.get(str(endpoint), [b""])
    return st.sampled_from([s if isinstance(s, bytes) else msgspec.json.encode(s) for s in seeds])


_AUTH_VALUES = [
    b"Bearer \xff\xfe",
    b"Bearer \xc3\xa9t\xc3\xa9",
    b"Bearer pk_\x80\x81",
    b"Basic dXNlcjpwYXNz",
    b"Bearer",
    b"bearer  ",
    b"",
    b"Bearer \x00",
    b"Bearer " + b"k" * 9000,
    b"Bearer pk_\xe2\x80\xa8",
]
_EXTRA = [
    b"Transfer-Encoding",
    b"Expect",
    b"Content-Encoding",
    b"Origin",
    b"Host",
    b"Accept",
    b"Idempotency-Key",
    b"X-Request-ID",
    b"Authorization",
    b"X-Twilio-Signature",
]


@st.composite
def _authorization(draw: st.DrawFn, context: Context) -> tuple[bytes, bytes]:
    """Mostly the real key (so the request gets in), sometimes a hostile one."""
    good = bearer(context)
    spoilt = st.one_of(
        st.sampled_from(_AUTH_VALUES),
        st.binary(max_size=60).map(lambda raw: b"Bearer " + raw),
        st.binary(max_size=8).map(lambda raw: good[1] + raw),
    )
    return (b"Authorization", draw(st.one_of(st.just(good[1]), spoilt)))


@st.composite
def hostile_headers(draw: st.DrawFn, context: Context) -> tuple[tuple[bytes, bytes], ...]:
    headers = [draw(_authorization(context))]
    headers.append((b"Content-Type", draw(st.sampled_from(CONTENT_TYPES))))
    headers.append(
        (
            b"X-Request-ID",
            draw(
                st.one_of(
                    st.sampled_from(
                        [
                            b"a\r\nInjected: 1",
                            b"a\nb",
                            b"a\rb",
                            b"x" * 200,
                            b"\xe2\x80\xa8",
                            b"id\x1b[31m",
                            b"ok-id",
                        ]
                    ),
                    st.binary(max_size=40),
                )
            ),
        )
    )
    if draw(st.booleans()):
        headers.append((b"Idempotency-Key", draw(st.binary(max_size=300))))
    extra = st.tuples(st.sampled_from(_EXTRA), st.binary(max_size=40))
    headers += draw(st.lists(extra, max_size=3))
    return tuple(headers)


def requests_for(endpoint: Endpoint, kind: str, context: Context) -> st.SearchStrategy[Any]:
    """The requests of one kind for one endpoint: ``bytes`` (any body), ``json`` (hostile JSON,
    often planted in a valid body), ``query`` (hostile query strings) or ``headers``."""
    seeds = [s for s in context.seeds.get(str(endpoint), ()) if not isinstance(s, bytes)]
    plain = (bearer(context), (b"Content-Type", JSON_TYPE))
    path = target(endpoint, context, kind == "query")
    build = st.builds
    if kind == "bytes":
        return build(
            WireRequest,
            st.just(endpoint.method),
            path,
            st.sampled_from(CONTENT_TYPES).map(lambda t: (plain[0], (b"Content-Type", t))),
            st.binary(max_size=4096),
            st.sampled_from(["true", "chunked"]),
        )
    if kind == "json":
        shaped = st.sampled_from(seeds or [{}]).flatmap(shaped_json)
        body = st.one_of(shaped, shaped, shaped, json_value, deep_json())
        return build(WireRequest, st.just(endpoint.method), path, st.just(plain), body)
    if kind == "query":
        body = seed_bodies(endpoint, context)
        return build(WireRequest, st.just(endpoint.method), path, st.just(plain), body)
    return build(
        WireRequest,
        st.just(endpoint.method),
        path,
        hostile_headers(context),
        seed_bodies(endpoint, context),
        st.sampled_from(LENGTHS),
    )


KINDS = ("bytes", "json", "query", "headers")


# --- the fixed corpus ----------------------------------------------------------------------

_CORPUS_BODIES = [b"\xff\xfe", b"\x00", b"{" * 100_000, b"%ff=%fe&a=\xff", b'{"a":"\xff"}']
_CORPUS_TYPES = [JSON_TYPE, b"multipart/form-data", b"application/x-www-form-urlencoded"]
_CORPUS_QUERY_VALUES = ["%00", "%ff%fe", "9" * 40, "-1", "%E2%80%A8"]
_CORPUS_SEGMENTS = ["%00", "%ff", "9" * 40, "..%2f..%2f"]
_CORPUS_HEADERS: list[tuple[bytes, bytes]] = [
    (b"Authorization", b"Bearer \xff\xfe"),
    (b"Authorization", b"Bearer \xc3\xa9t\xc3\xa9"),
    (b"X-Request-ID", b"a\nInjected: 1"),
    (b"X-Request-ID", b"a\rb"),
    (b"X-Request-ID", b"\x1b[31mred"),
    (b"X-Request-ID", b"\xe2\x80\xa8"),
    (b"Expect", b"\x80"),
    (b"Idempotency-Key", b"\xff\xfe"),
    (b"Content-Type", b"application/json; charset=\xff"),
]


def _path(endpoint: Endpoint, context: Context, override: Mapping[str, str] = {}) -> bytes:
    path = endpoint.path
    for name in endpoint.params:
        value = override.get(name) or next(iter(context.known.get(name, ())), "x")
        path = path.replace("{" + name + "}", value)
    return path.encode()


def _seed_bytes(endpoint: Endpoint, context: Context) -> bytes:
    seeds = context.seeds.get(str(endpoint), [b""])
    return seeds[0] if isinstance(seeds[0], bytes) else msgspec.json.encode(seeds[0])


def _json_corpus(endpoint: Endpoint, context: Context) -> list[WireRequest]:
    seeds = [s for s in context.seeds.get(str(endpoint), ()) if not isinstance(s, bytes)]
    bodies = [body for seed in seeds for body in planted_corpus(seed)]
    path, plain = _path(endpoint, context), _plain(context)
    return [WireRequest(endpoint.method, path, plain, b) for b in [*bodies, *CANONICAL_DOCUMENTS]]


def _bytes_corpus(endpoint: Endpoint, context: Context) -> list[WireRequest]:
    path, auth = _path(endpoint, context), bearer(context)
    return [
        WireRequest(endpoint.method, path, (auth, (b"Content-Type", content_type)), body)
        for content_type in _CORPUS_TYPES
        for body in _CORPUS_BODIES
    ]


def _query_corpus(endpoint: Endpoint, context: Context) -> list[WireRequest]:
    path = _path(endpoint, context)
    names = [*context.query_names.get(str(endpoint), ()), "x", "metadata.a"]
    targets = [path + f"?{n}={v}".encode() for n in names for v in _CORPUS_QUERY_VALUES]
    targets.append(path + b"?\xff")
    targets += [
        _path(endpoint, context, {name: segment})
        for name in endpoint.params
        for segment in _CORPUS_SEGMENTS
    ]
    return [WireRequest(endpoint.method, t, _plain(context)) for t in targets]


def _headers_corpus(endpoint: Endpoint, context: Context) -> list[WireRequest]:
    path, body, plain = _path(endpoint, context), _seed_bytes(endpoint, context), _plain(context)
    requests = [
        WireRequest(endpoint.method, path, (header, *(h for h in plain if h[0] != header[0])), body)
        for header in _CORPUS_HEADERS
    ]
    return [*requests, WireRequest(endpoint.method, path, plain, body, "long")]


_CORPORA = {
    "json": _json_corpus,
    "bytes": _bytes_corpus,
    "query": _query_corpus,
    "headers": _headers_corpus,
}


def corpus(endpoint: Endpoint, kind: str, context: Context) -> list[WireRequest]:
    """The fixed hostile requests of one kind for one endpoint."""
    return _CORPORA[kind](endpoint, context)


def _plain(context: Context) -> tuple[tuple[bytes, bytes], ...]:
    return (bearer(context), (b"Content-Type", JSON_TYPE))
