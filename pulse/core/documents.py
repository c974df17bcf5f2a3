"""The API's response bodies as msgspec types: handlers encode them, and the OpenAPI document
is generated from them, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

import msgspec

from pulse.core.models import Status
from pulse.core.views import AttemptView, AuditEntry, DeadLetterView, KeyView, NotificationView


class Accepted(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    status: Status
    channel: str
    priority: int
    created_at: str
    send_at: str | None = None  # a scheduled one's due time


class NotificationDocument(NotificationView, kw_only=True):
    history: list[AuditEntry]


class NotificationList(msgspec.Struct, kw_only=True):
    items: list[NotificationView]
    next_cursor: str | None


class AttemptsDocument(msgspec.Struct, kw_only=True):
    id: str
    attempts: list[AttemptView]
    history: list[AuditEntry]


class DeadLetterList(msgspec.Struct, kw_only=True):
    items: list[DeadLetterView]
    next_cursor: int | None


class DeadLetterDocument(msgspec.Struct, kw_only=True):
    dead_letter: DeadLetterView
    notification: NotificationView | None
    attempts: list[AttemptView]


class Replayed(msgspec.Struct, kw_only=True):
    replayed: int


class KeyList(msgspec.Struct, kw_only=True):
    items: list[KeyView]


class NewKey(msgspec.Struct, kw_only=True):
    id: str
    api_key: str
    scopes: list[str]


class NewTenantDocument(msgspec.Struct, kw_only=True):
    id: str
    name: str
    api_key: str
    scopes: list[str]


class Health(msgspec.Struct, kw_only=True):
    status: str


class Ready(msgspec.Struct, kw_only=True):
    status: str
    checks: dict[str, str]


class FieldError(msgspec.Struct, kw_only=True):
    detail: str
    pointer: str
    field: str | None = None


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details; ``errors`` names the fields at fault."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
    checks: dict[str, Any] | None = None
