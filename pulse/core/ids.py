"""Time-ordered identifiers (UUIDv7, RFC 9562).

Python 3.11 has no ``uuid.uuid7``; ids that sort by creation time keep B-tree inserts local and
make cursor pagination by id equal to pagination by time.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """Return a UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b: 62 bits
    return uuid.UUID(int=value)


def uuid7_ms(value: str) -> int | None:
    """The Unix milliseconds a UUIDv7 carries (when it was made), or None for another kind."""
    if len(value) == 36 and value[8] == value[13] == "-" and value[14] == "7":
        return int(value[:8] + value[9:13], 16)  # the hot path: a canonical id, no parsing
    parsed = uuid.UUID(value)
    return parsed.int >> 80 if parsed.version == 7 else None
