"""The stream message: a versioned msgspec schema, never pickle.

Each Redis stream entry has one field, ``m``, holding a msgpack-encoded ``StreamMessage``. The
``v`` field lets a newer worker read an older message and lets an older worker refuse a newer
one loudly (as a decode error that dead-letters the raw bytes) instead of guessing.

Optional fields that a worker may ignore without harm are added to the current version rather
than making a new one: the origin (the accepting request's id, its W3C ``traceparent`` and
``tracestate``) is such a field. A worker that predates it skips it (msgspec ignores unknown
fields) and delivers as before, so a rolling upgrade dead-letters nothing; a message written
before it reads as having no origin.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pulse.core.models import Job, JobKind
from pulse.core.tracecontext import Origin, parse_traceparent

MESSAGE_FIELD = b"m"


class StreamMessageV1(msgspec.Struct, frozen=True, kw_only=True, tag_field="v", tag=1):
    """Version 1 of the message appended to a priority stream (still read, no longer written)."""

    id: str
    tenant_id: str
    kind: Literal["notification", "fanout", "task"]
    channel: str = msgspec.field(name="handler")  # the wire name of versions 1 and 2
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int


class StreamMessage(StreamMessageV1, frozen=True, kw_only=True, tag=2):
    """Version 2: adds the fallback chain and the step in force. A version-1 worker refuses it
    loudly (dead letter, raw) rather than delivering a chain it cannot follow."""

    step: int = 0
    fallback: tuple[dict[str, Any], ...] = ()
    # The origin (optional, ignorable: see the module's docstring).
    request_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class UndecodableMessage(Exception):
    """The entry is not a message this worker understands; it carries the raw fields."""

    def __init__(self, reason: str, raw: dict[bytes, bytes]) -> None:
        super().__init__(reason)
        self.raw = raw


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StreamMessage | StreamMessageV1)


def encode_job(job: Job) -> dict[bytes, bytes]:
    origin = job.origin or Origin()
    trace = origin.trace
    message = StreamMessage(
        id=job.id,
        tenant_id=job.tenant_id,
        kind=job.kind.value,
        channel=job.channel,
        recipient=job.recipient,
        payload=job.payload,
        priority=job.priority,
        max_attempts=job.max_attempts,
        step=job.step,
        fallback=job.fallback,
        request_id=origin.request_id,
        traceparent=trace.traceparent() if trace is not None else None,
        tracestate=trace.state if trace is not None and trace.state else None,
    )
    return {MESSAGE_FIELD: _encoder.encode(message)}


def unstreamable(job: Job) -> str | None:
    """Why ``job`` cannot become a stream message (a value msgpack cannot carry, such as an
    integer beyond 64 bits), or None when it can."""
    try:
        encode_job(job)
    except (OverflowError, TypeError, msgspec.EncodeError) as exc:
        return f"cannot be streamed: {exc}"
    return None


def decode_job(fields: dict[bytes, bytes]) -> Job:
    data = fields.get(MESSAGE_FIELD)
    if data is None:
        raise UndecodableMessage("entry has no 'm' field", fields)
    try:
        message = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise UndecodableMessage(str(exc), fields) from None
    return Job(
        id=message.id,
        tenant_id=message.tenant_id,
        kind=JobKind(message.kind),
        channel=message.channel,
        recipient=message.recipient,
        payload=message.payload,
        priority=message.priority,
        max_attempts=message.max_attempts,
        step=message.step if isinstance(message, StreamMessage) else 0,
        fallback=message.fallback if isinstance(message, StreamMessage) else (),
        origin=_origin(message) if isinstance(message, StreamMessage) else None,
    )


def _origin(message: StreamMessage) -> Origin | None:
    """The origin the message carries; a trace context that does not parse is dropped."""
    if message.request_id is None and message.traceparent is None:
        return None
    state = [message.tracestate] if message.tracestate else []
    return Origin(
        request_id=message.request_id, trace=parse_traceparent(message.traceparent, state)
    )
