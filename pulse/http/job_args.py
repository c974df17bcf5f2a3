"""What a job's ``args`` may hold beyond its task's schema: integers the work stream can carry
(64 bits), and at most ``PULSE_MAX_RESULT_BYTES`` of JSON (a batch body may be bigger than
one job's). Checked at the API, so an error names ``args`` and not the stored payload."""

from __future__ import annotations

from typing import Any

import msgspec

from pulse.core.errors import InvalidInput
from pulse.services.accept import MSGPACK_INT, walk


def check_args(args: dict[str, Any], max_bytes: int, where: str = "$.args") -> None:
    size = len(msgspec.json.encode(args))
    if size > max_bytes:
        raise InvalidInput(
            f"{where[2:]}: {size} bytes of JSON, over PULSE_MAX_RESULT_BYTES ({max_bytes})", where
        )
    for path, item in walk(where, args):
        if isinstance(item, int) and not MSGPACK_INT[0] <= item <= MSGPACK_INT[1]:
            raise InvalidInput(f"{path[2:]}: integers must lie within -2^63 .. 2^64-1", path)
