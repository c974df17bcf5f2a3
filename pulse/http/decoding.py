"""Bytes from the network into typed requests: the one decoder every body and query goes through.

Whatever arrives, the answer is an ``InvalidInput`` naming the field (a 4xx), never an
exception the problem middleware has not been told about:

- invalid UTF-8, malformed JSON, nesting deeper than the stack: 400;
- an object with a repeated key (a parser differential with any proxy in front): 400 naming
  the key, so no two readers of one body can see two requests;
- a NUL character anywhere (PostgreSQL's text and jsonb cannot store it): 422 naming the
  field, before any query;
- a value of the wrong type or shape: 422 naming the field (msgspec's own check).

Pure: no I/O, no aiohttp, so the same rules can serve the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import msgspec

from pulse.core.errors import InvalidInput

T = TypeVar("T")
_AT_PATH = re.compile(r"^(?P<reason>.*) - at `(?P<path>\$[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
NUL = "\x00"
_ESCAPED_NUL = b"\\u0000"  # a raw NUL byte is not valid JSON; only its escape can carry one


class PointedInput(InvalidInput):
    """An input error located by a JSON Pointer (RFC 6901) rather than a JSON path: keys may
    hold any character, dots and slashes included."""

    status = 422

    def __init__(self, detail: str, at: str | None = None) -> None:
        super().__init__(detail)
        self.at = at


class MalformedBody(PointedInput):
    """The bytes are not one unambiguous JSON document: 400, with the pointer when known."""

    status = 400


class RepeatedKey(Exception):
    """Raised inside ``json.loads`` by the pairs hook; the slow path then finds where."""


def decode_json(body: bytes, kind: type[T], deep_at: str = "$") -> T:
    """Decode ``body`` into ``kind``. ``deep_at`` is the field blamed for nesting too deep
    (``$.payload`` for a notification: the only place a client may nest freely)."""
    try:
        value = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise explain(exc) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise MalformedBody("body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidInput("body is nested too deeply", deep_at) from None
    check_plain(body)
    return value


def explain(exc: msgspec.ValidationError, prefix: str = "$") -> InvalidInput:
    """Map msgspec's message to a readable detail and a JSON path to the offending field."""
    text = str(exc)
    match = _AT_PATH.match(text)
    reason, path = (match["reason"], match["path"]) if match else (text, "$")
    path = prefix + path[1:]
    for pattern, verb in ((_MISSING, "is required"), (_UNKNOWN, "is not allowed")):
        field = pattern.match(reason)
        if field:
            path = f"{path}.{field['field']}"
            return InvalidInput(f"field {path[2:]!r} {verb}", path)
    where = path[2:] or "body"
    return InvalidInput(f"{where}: {reason}", path)


def check_plain(body: bytes) -> None:
    """Refuse repeated keys and NUL characters. ``json.loads`` with a pairs hook is the check
    (C speed: a few microseconds for a notification); the pointer is searched only on refusal."""
    try:
        document = _plain(body.decode())
    except RepeatedKey:
        pointer, name = _first_repeat(json.loads(body, object_pairs_hook=_Pairs))
        raise MalformedBody(f"key {name!r} is repeated in one object", pointer) from None
    except (RecursionError, ValueError):  # deeper than Python's stack, or a 4,300-digit number
        raise MalformedBody("body is nested too deeply or holds a number too long") from None
    if _ESCAPED_NUL in body:
        refuse_nul(document)


def decode_query(params: Mapping[str, str], kind: type[T]) -> T:
    """Query-string parameters into ``kind`` (strings converted to its field types)."""
    check_query(params)
    try:
        return msgspec.convert(dict(params), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise explain(exc) from None


def check_query(params: Mapping[str, str]) -> None:
    """Query-string filters cannot hold a NUL either (they reach PostgreSQL as text)."""
    for name, value in params.items():
        if NUL in name or NUL in value:
            detail = f"query parameter {name!r} holds a NUL character"
            raise PointedInput(detail, "/" + escape(name))


def refuse_nul(value: Any, pointer: str = "") -> None:
    """Raise naming the first string (value or key) holding a NUL character."""
    for where, item in walk(value, pointer):
        if isinstance(item, str) and NUL in item:
            detail = f"{where or 'the body'} holds a NUL character, which cannot be stored"
            raise PointedInput(detail, where)


def walk(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Every value and key inside ``value`` with its JSON Pointer, in document order;
    iterative, so no depth exhausts the stack."""
    todo = [(pointer, value)]
    while todo:
        where, item = todo.pop()
        yield where, item
        if isinstance(item, dict):
            children = [(f"{where}/{escape(key)}", key, child) for key, child in item.items()]
            for here, key, _ in children:
                yield here, key
            todo.extend((here, child) for here, _, child in reversed(children))
        elif isinstance(item, list):
            todo.extend((f"{where}/{i}", child) for i, child in reversed(list(enumerate(item))))


def _plain(text: str) -> Any:
    """The document, decoded again by a parser that sees repeated keys. ``raw_decode`` skips
    the trailing-data scan (msgspec has checked the syntax), a third faster than ``loads``."""
    try:
        return _UNIQUE.raw_decode(text)[0]
    except json.JSONDecodeError:  # leading whitespace, which raw_decode does not skip
        return _UNIQUE.decode(text)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise RepeatedKey
    return document


_UNIQUE = json.JSONDecoder(object_pairs_hook=_unique)


class _Pairs(list[tuple[str, Any]]):
    """An object as its pairs, in order, repeats kept: what the slow path searches."""


def _first_repeat(document: Any) -> tuple[str, str]:
    """The JSON Pointer of the first repeated key, and the key."""
    todo: list[tuple[str, Any]] = [("", document)]
    while todo:
        pointer, item = todo.pop(0)
        if isinstance(item, _Pairs):
            seen: set[str] = set()
            for key, child in item:
                here = f"{pointer}/{escape(key)}"
                if key in seen:
                    return here, key
                seen.add(key)
                todo.append((here, child))
        elif isinstance(item, list):
            todo.extend((f"{pointer}/{index}", child) for index, child in enumerate(item))
    return "", ""


def escape(key: str) -> str:
    """RFC 6901: ``~`` and ``/`` inside a key."""
    return key.replace("~", "~0").replace("/", "~1")
