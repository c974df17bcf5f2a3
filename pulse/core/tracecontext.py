"""W3C Trace Context (``traceparent``, ``tracestate``): parsing and formatting, pure.

A header that breaks the rules is ignored, never an error: the caller starts a new trace
instead (https://www.w3.org/TR/trace-context/, "if the vendor failed to parse traceparent,
it MUST NOT attempt to parse tracestate"). Only the sampled flag is kept; the other bits are
unknown to this version of the rules and are sent on as zero, as they require.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

import msgspec

VERSION = "00"
_LOWER_HEX = r"[0-9a-f]"
_PARENT = re.compile(
    rf"(?P<version>{_LOWER_HEX}{{2}})-(?P<trace>{_LOWER_HEX}{{32}})"
    rf"-(?P<span>{_LOWER_HEX}{{16}})-(?P<flags>{_LOWER_HEX}{{2}})"
)
_KEY = re.compile(r"[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13}")
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
MAX_STATE_MEMBERS = 32
SAMPLED = 0x01
ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16

RandomHex = Callable[[int], str]  # n bytes -> 2n hex digits
_ids = random.Random()  # seeded from os.urandom: ids must be unique and random, not secret


def random_hex(size: int) -> str:
    """``size`` random bytes as hex: W3C ids need randomness, not secrecy, and this costs a
    tenth of ``secrets.token_hex`` on the delivery path."""
    return format(_ids.getrandbits(size * 8), f"0{size * 2}x")


class TraceContext(msgspec.Struct, frozen=True, kw_only=True):
    """One span's identity as it travels: its trace, its own id, and the caller's state."""

    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero
    sampled: bool = True
    state: str = ""  # a valid ``tracestate`` value, or empty

    def traceparent(self) -> str:
        flags = SAMPLED if self.sampled else 0
        return f"{VERSION}-{self.trace_id}-{self.span_id}-{flags:02x}"

    def headers(self) -> dict[str, str]:
        """What to send on an outgoing request made in this span."""
        sent = {"traceparent": self.traceparent()}
        if self.state:
            sent["tracestate"] = self.state
        return sent


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a job came from: the request that accepted it and the span it was accepted in
    (its parent in the trace), carried to the worker in the stream message."""

    request_id: str | None = None
    trace: TraceContext | None = None


def parse_traceparent(value: str | None, state: Sequence[str] = ()) -> TraceContext | None:
    """The caller's context, or None when ``value`` is missing or malformed. ``state`` holds
    the ``tracestate`` header's values (several headers join as one list); a malformed one is
    dropped, keeping the trace."""
    if value is None:
        return None
    value = value.strip(" \t")
    match = _PARENT.match(value)
    if match is None or not _fits_version(match.group("version"), value):
        return None
    trace_id, span_id = match.group("trace"), match.group("span")
    if trace_id == ZERO_TRACE or span_id == ZERO_SPAN:
        return None
    sampled = bool(int(match.group("flags"), 16) & SAMPLED)
    return TraceContext(
        trace_id=trace_id, span_id=span_id, sampled=sampled, state=parse_tracestate(state)
    )


def _fits_version(version: str, value: str) -> bool:
    """Version 00 is exactly 55 characters; a later one may add fields after a dash."""
    if version == "ff":
        return False
    if version == VERSION:
        return len(value) == 55
    return len(value) == 55 or value[55] == "-"


def parse_tracestate(values: Sequence[str]) -> str:
    """The list-members of every ``tracestate`` header in order, rejoined; empty when any
    member is malformed, a key repeats, or there are more than 32."""
    members = [m.strip(" \t") for value in values for m in value.split(",")]
    members = [m for m in members if m]
    keys = []
    for member in members:
        key, sep, item = member.partition("=")
        if not sep or not _KEY.fullmatch(key) or not _VALUE.fullmatch(item):
            return ""
        keys.append(key)
    if len(members) > MAX_STATE_MEMBERS or len(set(keys)) != len(keys):
        return ""
    return ",".join(members)


def new_span_id(random_hex: RandomHex = random_hex) -> str:
    return _nonzero(random_hex, 8)


def new_trace_id(random_hex: RandomHex = random_hex) -> str:
    return _nonzero(random_hex, 16)


def _nonzero(random_hex: RandomHex, size: int) -> str:
    while True:
        value = random_hex(size)
        if value.strip("0"):
            return value


def child_of(parent: TraceContext | None, random_hex: RandomHex = random_hex) -> TraceContext:
    """A new span's context: in ``parent``'s trace, or at the root of a new one."""
    if parent is None:
        return TraceContext(trace_id=new_trace_id(random_hex), span_id=new_span_id(random_hex))
    return msgspec.structs.replace(parent, span_id=new_span_id(random_hex))
