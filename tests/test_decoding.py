"""The one request decoder and the accept service's pure rules, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from pulse.core.errors import InvalidInput
from pulse.core.models import Job, JobKind
from pulse.http.decoding import MalformedBody, PointedInput, decode_json, decode_query
from pulse.services.accept import check_streamable, fingerprint

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b'{"a": 1, "a": 1}', "/a"),
        (b' {"x": [{"k": 1}, {"k": 2, "k": 3}]}', "/x/1/k"),
        (b'{"o": {"~": 1, "/": 2, "~": 3}}', "/o/~0"),
    ],
)
def test_a_repeated_key_is_refused_with_its_pointer(body: bytes, pointer: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        decode_json(body, dict[str, Any])

    assert caught.value.at == pointer


def test_equal_keys_in_different_objects_are_fine() -> None:
    assert decode_json(b'{"a": {"a": 1}, "b": [{"a": 2}]} \n', dict[str, Any])["b"] == [{"a": 2}]


@pytest.mark.parametrize(
    ("body", "pointer"), [(b'{"a": ["x", "y\\u0000"]}', "/a/1"), (b'{"k\\u0000": 1}', "/k\\u0000")]
)
def test_a_nul_character_is_refused_naming_where(body: bytes, pointer: str) -> None:
    with pytest.raises(PointedInput) as caught:
        decode_json(body, dict[str, Any])

    assert caught.value.at == pointer.replace("\\u0000", "\x00")
    assert caught.value.status == 422


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    assert decode_json(b'{"a": "\\\\u0000"}', dict[str, Any]) == {"a": "\\u0000"}


@pytest.mark.parametrize("body", [b'["\xff"]', b"[1", b"[" * 5000 + b"]" * 5000])
def test_bad_bytes_are_input_errors(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_json(body, list[Any])


def test_query_parameters_with_nul_are_refused() -> None:
    with pytest.raises(PointedInput) as caught:
        decode_query({"channel": "e\x00"}, dict[str, str])

    assert caught.value.at == "/channel"


def test_the_fingerprint_ignores_key_order_at_every_level() -> None:
    one = {"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": 2}}
    two = {"b": {"y": 2, "x": [1, {"q": 2, "p": 1}]}, "a": 1}

    assert fingerprint(one) == fingerprint(two)
    assert fingerprint(one) != fingerprint(one | {"a": 2})


def job(payload: dict[str, Any], fallback: tuple[dict[str, Any], ...] = ()) -> Job:
    return Job(
        id="n1", tenant_id="t1", kind=JobKind.NOTIFICATION, channel="log", recipient="r",
        payload=payload, priority=2, max_attempts=3, fallback=fallback,
    )  # fmt: skip


def test_integers_the_stream_cannot_carry_are_named_before_any_commit() -> None:
    check_streamable(job({"min": -(2**63), "max": 2**64 - 1}))

    with pytest.raises(InvalidInput) as caught:
        check_streamable(job({"ok": 1}, ({"payload": {"deep": [0, {"n": -(2**63) - 1}]}},)))

    assert caught.value.pointer == "$.fallback[0].payload.deep[1].n"
