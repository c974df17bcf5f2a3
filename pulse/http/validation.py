"""Turn a request body into a checked notification, or an error naming the field at fault.

Two steps, both msgspec: the envelope (recipient, channel, payload, priority) first, then the
payload and recipient by the schema of the channel named in the envelope. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from pulse.core.errors import InvalidInput
from pulse.core.models import DEFAULT_PRIORITY, MaxAttempts, PriorityLevel
from pulse.core.ports import ChannelSpec

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


_AT_PATH = re.compile(r"^(?P<reason>.*) - at `(?P<path>\$[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


@dataclass(frozen=True, slots=True)
class CheckedNotification:
    request: NotificationRequest
    recipient: str
    payload: msgspec.Struct
    fallback: tuple[dict[str, Any], ...] = ()  # checked steps, recipients normalised


def decode_request(
    body: bytes, specs: Mapping[str, ChannelSpec], max_depth: int = 8
) -> CheckedNotification:
    """Decode and validate ``body``; raise ``InvalidInput`` with a JSON path on any defect."""
    request = _decode(body)
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
    steps = []
    for index, step in enumerate(request.fallback or ()):
        where = f"$.fallback[{index}]"
        step_spec = channel_spec(step.channel, specs, where)
        steps.append(
            {
                "channel": step.channel,
                "recipient": check_recipient(step.recipient, step_spec, where),
                "payload": step.payload,
            }
        )
        convert_payload(step.payload, step_spec, f"{where}.payload")
    return CheckedNotification(request, recipient, payload, tuple(steps))


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


def _decode(body: bytes) -> NotificationRequest:
    try:
        return msgspec.json.decode(body, type=NotificationRequest)
    except msgspec.ValidationError as exc:
        raise explain(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("body is nested too deeply", "$.payload") from None


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


def depth(value: Any) -> int:
    """How deeply objects and arrays nest inside ``value`` (a scalar is 0); iterative, so no
    input can exhaust the stack."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        todo.extend((child, level + 1) for child in children)
    return deepest
