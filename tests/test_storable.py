"""Text and JSON PostgreSQL can store: NUL replaced in text, found or replaced in JSON strings,
a literal backslash followed by "u0000" left alone."""

from __future__ import annotations

import json

import msgspec
import pytest

from pulse.core.storable import json_holds_nul, storable_json, storable_text

pytestmark = pytest.mark.unit


def test_nul_in_text_becomes_the_replacement_character() -> None:
    assert storable_text("bad\x00err\x00") == "bad\ufffderr\ufffd"
    assert storable_text("sur\ud800rogate \udcff") == "sur\ufffdrogate \ufffd"
    assert storable_text("plain") == "plain"
    assert storable_text(None) is None


def test_a_nul_inside_a_json_string_is_found_and_replaced() -> None:
    encoded = msgspec.json.encode({"v": "a\x00b", "w": ["\x00"]})
    assert json_holds_nul(encoded)
    assert json.loads(storable_json(encoded)) == {"v": "a\ufffdb", "w": ["\ufffd"]}


def test_a_literal_backslash_u0000_is_not_a_nul() -> None:
    encoded = msgspec.json.encode({"v": "\\u0000", "w": "\\\\u0000"})
    assert not json_holds_nul(encoded)
    assert storable_json(encoded) == encoded
    mixed = msgspec.json.encode({"v": "\\\x00"})  # a backslash, then a NUL
    assert json_holds_nul(mixed)
    assert json.loads(storable_json(mixed)) == {"v": "\\\ufffd"}
