"""Hostile JSON, as bytes rather than encoded from Python values, so a document can hold what no
encoder writes: invalid UTF-8 inside strings, lone surrogates escaped as ``\\ud800``, NUL,
repeated keys, integers beyond 64 bits and nesting deeper than any recursion limit.

Hostile values are often planted inside a valid body (a *seed*), so the request gets past the
envelope's checks and into the handler's deeper code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import strategies as st

Fragment = bytes  # one encoded JSON value (or something that almost is one)
Path = tuple[str | int, ...]


_ODD_STRING_PIECES = [
    b"\\u0000",
    b"\x00",
    b"\\ud800",
    b"\\udfff",
    b"\\ud800\\u0041",
    b"\\udbff\\udfff",
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\\u2028",
    b"\xe2\x80\xa8",
    b"\\u000b",
    b"\\u000c",
    b"\\u0085",
    b"\\u001c",
    b"\r\n",
    b"\\r\\n",
    b"\\\\",
    b'\\"',
    b"\\x41",
    b"\\u12",
    b"%00",
    b"{{",
    b"${x}",
    b"'; --",
]
_ODD_NUMBERS = [
    b"18446744073709551616",
    b"-9223372036854775809",
    b"9223372036854775808",
    b"340282366920938463463374607431768211456",
    b"9" * 400,
    b"1" + b"0" * 5000,
    b"1e999",
    b"-1e999",
    b"1E400",
    b"1e-400",
    b"-0",
    b"0.0",
    b"01",
    b"+1",
    b".5",
    b"NaN",
    b"Infinity",
    b"0x10",
    b"1_000",
]
_KEYS = [
    b"recipient",
    b"channel",
    b"payload",
    b"priority",
    b"items",
    b"template",
    b"data",
    b"subject",
    b"body",
    b"url",
    b"name",
    b"a",
    b"__proto__",
    b"",
]


def _escaped(text: str) -> bytes:
    return msgspec.json.encode(text)[1:-1]


string_piece = st.one_of(st.text(max_size=12).map(_escaped), st.sampled_from(_ODD_STRING_PIECES))
json_string: st.SearchStrategy[Fragment] = st.lists(string_piece, max_size=5).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)
json_number: st.SearchStrategy[Fragment] = st.one_of(
    st.integers().map(lambda n: str(n).encode()),
    st.integers(min_value=2**63 - 2, max_value=2**80).map(lambda n: str(n).encode()),
    st.integers(min_value=-(2**80), max_value=-(2**63) + 1).map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
    st.sampled_from(_ODD_NUMBERS),
)
json_scalar = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"tru", b"None"]), json_number, json_string
)
json_key: st.SearchStrategy[Fragment] = st.one_of(
    st.sampled_from(_KEYS).map(lambda k: b'"' + k + b'"'), json_string
)


def json_object(pairs: Sequence[tuple[Fragment, Fragment]]) -> Fragment:
    return b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"


def json_array(items: Sequence[Fragment]) -> Fragment:
    return b"[" + b",".join(items) + b"]"


json_value: st.SearchStrategy[Fragment] = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(json_array),
        st.lists(st.tuples(json_key, children), max_size=4).map(json_object),
    ),
    max_leaves=10,
)


@st.composite
def deep_json(draw: st.DrawFn) -> Fragment:
    """Arrays or objects nested far beyond any sane limit (and Python's recursion limit)."""
    levels = draw(
        st.one_of(st.sampled_from([9, 10, 64, 1_000, 5_000, 100_000]), st.integers(1, 3_000))
    )
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"a":[', b"]}")]))
    return opening * levels + b"1" + closing * levels


hostile_value: st.SearchStrategy[Fragment] = st.one_of(json_value, deep_json(), json_number)


def encode_with(value: Any, path: Path, key: Fragment, fragment: Fragment, repeat: bool) -> bytes:
    """``value`` as JSON, with ``fragment`` under ``key`` in the object at ``path``: replacing
    the key's value, or (``repeat``) added after it, so the object holds the key twice."""
    if not path:
        if not isinstance(value, dict):
            return msgspec.json.encode(value)
        pairs = [(msgspec.json.encode(k), msgspec.json.encode(v)) for k, v in value.items()]
        if not repeat:
            pairs = [(k, v) for k, v in pairs if k != key]
        return json_object([*pairs, (key, fragment)])
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return json_object(
            [
                (msgspec.json.encode(k), encode_with(v, rest, key, fragment, repeat))
                if k == head
                else (msgspec.json.encode(k), msgspec.json.encode(v))
                for k, v in value.items()
            ]
        )
    return json_array(
        [
            encode_with(v, rest, key, fragment, repeat) if i == head else msgspec.json.encode(v)
            for i, v in enumerate(value)
        ]
    )


def object_paths(value: Any, path: Path = ()) -> list[Path]:
    """The path of every object inside ``value`` (through arrays too), ``value`` itself first."""
    found: list[Path] = [path] if isinstance(value, dict) else []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if (isinstance(value, list))
        else []
    )
    for name, child in children:
        found += object_paths(child, (*path, name))
    return found


def _node(value: Any, path: Path) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def shaped_json(draw: st.DrawFn, seed: Any) -> bytes:
    """A valid body for the endpoint with one hostile value planted somewhere inside, so the
    request gets past the envelope's checks and into the handler's deeper code."""
    paths = object_paths(seed)
    if not paths:
        return draw(json_value)
    path = draw(st.sampled_from(paths))
    names = [msgspec.json.encode(name) for name in _node(seed, path)]
    key = draw(st.one_of(st.sampled_from(names), json_key) if names else json_key)
    return encode_with(seed, path, key, draw(hostile_value), draw(st.booleans()))


# Tried on every key of every seed, every run: the classes of value known to have broken Pulse.
CANONICAL_VALUES: list[Fragment] = [
    b'"\xff"',
    b'"a\xc3\x28b"',
    b'"\xed\xa0\x80"',
    b'"\\ud800"',
    b'"\\udfff x"',
    b'"\\u0000"',
    b'"a\x00b"',
    b'"a\\u2028b"',
    b'"a\\u000bb"',
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e999",
    b"[" * 20_000 + b"]" * 20_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
]
CANONICAL_DOCUMENTS: list[bytes] = [
    b'"\xff"',
    b'{"\xff":1}',
    b'{"a":1,"a":2}',
    b"[" * 100_000 + b"]" * 100_000,
    b"\xef\xbb\xbf{}",
    b"{}" + b" " * 10 + b"{}",
    b"",
]


def planted_corpus(seed: Any) -> list[bytes]:
    """``seed`` with each canonical value in place of each of its values in turn, and with each
    of its keys repeated (holding a canonical value the second time)."""
    bodies = []
    for path in object_paths(seed):
        for name in _node(seed, path):
            key = msgspec.json.encode(name)
            bodies += [encode_with(seed, path, key, value, False) for value in CANONICAL_VALUES]
            bodies.append(encode_with(seed, path, key, b'"\xff"', True))
    return bodies
