"""The stream message: a versioned msgspec schema, never pickle.

Each Redis stream entry has one field, ``m``, holding a msgpack-encoded ``StreamMessage``. The
``v`` field lets a newer worker read an older message and lets an older worker refuse a newer
one loudly (as a decode error that dead-letters the raw bytes) instead of guessing.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pulse.models import Job

MESSAGE_FIELD = b"m"


class StreamMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="v", tag=1):
    """Version 1 of the message appended to a priority stream."""

    id: str
    tenant_id: str
    kind: Literal["notification", "fanout"]
    handler: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int


class UndecodableMessage(Exception):
    """The entry is not a message this worker understands; it carries the raw fields."""

    def __init__(self, reason: str, raw: dict[bytes, bytes]) -> None:
        super().__init__(reason)
        self.raw = raw


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StreamMessage)


def encode_job(job: Job) -> dict[bytes, bytes]:
    message = StreamMessage(
        id=job.id,
        tenant_id=job.tenant_id,
        kind="fanout" if job.kind == "fanout" else "notification",
        handler=job.handler,
        recipient=job.recipient,
        payload=job.payload,
        priority=job.priority,
        max_attempts=job.max_attempts,
    )
    return {MESSAGE_FIELD: _encoder.encode(message)}


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
        kind=message.kind,
        handler=message.handler,
        recipient=message.recipient,
        payload=message.payload,
        priority=message.priority,
        max_attempts=message.max_attempts,
    )
