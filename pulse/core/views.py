"""What the API answers about a tenant's work: read views shared by the server, which fills them
from its tables, and the client, which decodes them (so the client needs none of the server)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from pulse.core.models import Status


class NotificationView(msgspec.Struct, kw_only=True):
    """What ``GET /api/notifications/{id}`` answers."""

    id: str
    status: Status
    channel: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    attempts: int
    last_error: str | None
    metadata: dict[str, str]
    fallback: list[dict[str, Any]]
    step: int  # the fallback step in force: 0 is the notification's own channel
    provider: str | None  # the provider that delivered it
    receipt_for: str | None  # set on delivery receipts: the notification they report
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    send_at: datetime | None = None  # when it is (or was) due; None: sent at once


class AuditEntry(msgspec.Struct, kw_only=True):
    """One event in a notification's life, in the order it happened: a status it entered (a
    ``queued`` whose detail starts with ``fallback`` when the chain moved to its next channel),
    or ``replayed`` and ``provider:<status>`` (a provider's delivery report)."""

    status: str
    at: datetime
    worker: str | None = None
    detail: str | None = None


class AttemptView(msgspec.Struct, kw_only=True):
    number: int
    channel: str | None
    provider: str | None
    started_at: datetime
    duration_ms: float
    outcome: str
    error_class: str | None
    error_message: str | None
    provider_response: str | None
    worker: str
    provider_message_id: str | None = None  # the provider's id of a message it accepted


class DeadLetterView(msgspec.Struct, kw_only=True):
    id: int
    notification_id: str | None
    tenant_id: str | None
    channel: str | None
    reason: str
    error_class: str | None
    dead_at: datetime
    stream: str
    entry_id: str


class KeyView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
