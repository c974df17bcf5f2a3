"""What a job's ``args`` may hold beyond its task's schema: integers the work stream can carry
(64 bits), and at most ``PULSE_MAX_RESULT_BYTES`` of JSON (a batch body may be bigger than
one job's). Checked at the API, so an error names ``args`` and not the stored payload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from pulse.core.errors import InvalidInput
from pulse.services.accept import MSGPACK_INT


def check_args(args: dict[str, Any], max_bytes: int, where: str = "$.args") -> None:
    size = len(msgspec.json.encode(args))
    if size > max_bytes:
        raise InvalidInput(
            f"{where[2:]}: {size} bytes of JSON, over PULSE_MAX_RESULT_BYTES ({max_bytes})", where
        )
    todo: list[tuple[str, Any]] = [(where, args)]
    while todo:
        path, item = todo.pop()
        if isinstance(item, int) and not MSGPACK_INT[0] <= item <= MSGPACK_INT[1]:
            raise InvalidInput(f"{path[2:]}: integers must lie within -2^63 .. 2^64-1", path)
        todo.extend(_children(path, item))


def _children(where: str, item: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(item, dict):
        yield from ((f"{where}.{key}", child) for key, child in item.items())
    elif isinstance(item, list):
        yield from ((f"{where}[{i}]", child) for i, child in enumerate(item))
