"""Turn a request body into a checked notification, or an error naming the field at fault.

Two steps, both msgspec: the envelope (recipient, channel, payload, priority) first, then the
payload and recipient by the schema of the channel named in the envelope. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec

from pulse.core.errors import InvalidInput, NotConfigured
from pulse.core.models import DEFAULT_PRIORITY, MaxAttempts, PriorityLevel
from pulse.core.ports import ChannelSpec
from pulse.core.schedule import Delay, DeliveryWindow, RequestedTime, due_time
from pulse.http.decoding import decode_json, explain

MetadataKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]
MetadataValue = Annotated[str, msgspec.Meta(max_length=256)]
# The client's own labels, to filter lists by: at most 20 string pairs.
Metadata = Annotated[dict[MetadataKey, MetadataValue], msgspec.Meta(max_length=20)]


Recipient = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_FALLBACK_STEPS = 5


class FallbackStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where to go next when the channel before fails for good (checked like a notification)."""

    channel: ChannelName
    recipient: Recipient
    payload: dict[str, Any]


class NotificationRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /api/notifications/``; the payload is checked by its channel's schema.

    ``fallback``: channels to try in turn when the one before fails for good (a permanent
    refusal, or its attempts exhausted), such as push, then sms, then email."""

    recipient: Recipient
    channel: ChannelName
    payload: dict[str, Any]
    priority: PriorityLevel = DEFAULT_PRIORITY
    max_attempts: MaxAttempts | None = None
    metadata: Metadata | None = None
    fallback: Annotated[list[FallbackStep], msgspec.Meta(max_length=MAX_FALLBACK_STEPS)] | None = (
        None
    )
    # When to send: at ``send_at`` (RFC 3339 with an offset) or ``delay_s`` from now, and only
    # inside the recipient's quiet-hours window if one is given; nothing: at once.
    send_at: RequestedTime | None = None
    delay_s: Delay | None = None
    deliver_in_window: DeliveryWindow | None = None


@dataclass(frozen=True, slots=True)
class CheckedNotification:
    request: NotificationRequest
    recipient: str
    payload: msgspec.Struct
    fallback: tuple[dict[str, Any], ...] = ()  # checked steps, recipients normalised

    def due(self, now: datetime, max_ahead_s: float, where: str = "$") -> datetime | None:
        """When it is due (UTC), None for at once; a 422 naming the field past the bound."""
        req = self.request
        return due_time(now, req.send_at, req.delay_s, req.deliver_in_window, max_ahead_s, where)


def decode_request(
    body: bytes, specs: Mapping[str, ChannelSpec], max_depth: int = 8
) -> CheckedNotification:
    """Decode and validate ``body``; raise ``InvalidInput`` with a JSON path on any defect."""
    request = decode_json(body, NotificationRequest, deep_at="$.payload")
    _check_depth(request, max_depth)
    return _check(request, specs)


def check_item(
    item: Any, specs: Mapping[str, ChannelSpec], max_depth: int = 8
) -> CheckedNotification:
    """One already-decoded item of a batch, checked like a single request."""
    try:
        request = msgspec.convert(item, NotificationRequest)
    except msgspec.ValidationError as exc:
        raise explain(exc) from None
    _check_depth(request, max_depth)
    return _check(request, specs)


def _check_depth(request: NotificationRequest, max_depth: int) -> None:
    payloads = [("$.payload", request.payload)] + [
        (f"$.fallback[{index}].payload", step.payload)
        for index, step in enumerate(request.fallback or ())
    ]
    for where, payload in payloads:
        if depth(payload) > max_depth:
            raise InvalidInput(f"payload is nested deeper than {max_depth} levels", where)


def _check(request: NotificationRequest, specs: Mapping[str, ChannelSpec]) -> CheckedNotification:
    spec = channel_spec(request.channel, specs, "$")
    recipient = check_recipient(request.recipient, spec, "$")
    payload = convert_payload(request.payload, spec)
    steps, chain = [], [spec]
    for index, step in enumerate(request.fallback or ()):
        where = f"$.fallback[{index}]"
        step_spec = channel_spec(step.channel, specs, where)
        chain.append(step_spec)
        steps.append(
            {
                "channel": step.channel,
                "recipient": check_recipient(step.recipient, step_spec, where),
                "payload": step.payload,
            }
        )
        convert_payload(step.payload, step_spec, f"{where}.payload")
    _require_configured(chain)
    return CheckedNotification(request, recipient, payload, tuple(steps))


def _require_configured(chain: list[ChannelSpec]) -> None:
    """A valid request naming a channel this deployment cannot deliver: 501 naming the setting
    (checked last, so a request that is also invalid gets its 422 first)."""
    for index, spec in enumerate(chain):
        if spec.missing is not None:
            at = f"fallback[{index - 1}].channel" if index else "channel"
            raise NotConfigured(
                f"{at}: this deployment cannot deliver {spec.name!r}: {spec.missing} is not set"
            )


def channel_spec(channel: str, specs: Mapping[str, ChannelSpec], where: str) -> ChannelSpec:
    spec = specs.get(channel)
    if spec is None:
        known = ", ".join(sorted(specs))
        raise InvalidInput(f"unknown channel {channel!r} (known: {known})", f"{where}.channel")
    return spec


def check_recipient(recipient: str, spec: ChannelSpec, where: str) -> str:
    try:
        return spec.check_recipient(recipient)
    except ValueError as exc:
        raise InvalidInput(str(exc), f"{where}.recipient") from None


def convert_payload(
    payload: dict[str, Any], spec: ChannelSpec, where: str = "$.payload"
) -> msgspec.Struct:
    try:
        return msgspec.convert(payload, spec.payload_type)
    except msgspec.ValidationError as exc:
        raise explain(exc, prefix=where) from None


def depth(value: Any) -> int:
    """How deeply objects and arrays nest inside ``value`` (a scalar is 0); level by level,
    iterative, so no input can exhaust the stack (and a flat payload costs two passes)."""
    deepest, level = 0, [value]
    while True:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return deepest
        deepest += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
