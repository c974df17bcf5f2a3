"""``POST /api/notifications/batch``: many items, or one template with many recipients.

Every item is validated on its own and answered on its own (its id, or its errors); the valid
ones are committed as one batch and fanned out by a worker, not in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pulse.config import Settings
from pulse.core.errors import InvalidInput, NotConfigured
from pulse.core.ids import uuid7
from pulse.core.models import DEFAULT_PRIORITY, Job, JobKind, MaxAttempts, PriorityLevel
from pulse.core.ports import ChannelSpec
from pulse.core.schedule import Delay, DeliveryWindow, RequestedTime
from pulse.core.timeutil import utcnow
from pulse.http.admission import admit_or_replay
from pulse.http.auth import require
from pulse.http.body import read_json
from pulse.http.idempotency import idempotency_key, render
from pulse.http.problems import json_pointer, problem
from pulse.http.state import ACCEPT, SETTINGS, SPECS, TENANT_ID
from pulse.http.validation import CheckedNotification, Metadata, check_item, depth
from pulse.services.accept import BatchAccepted, ItemResult, check_streamable
from pulse.store.batches import BatchItem

__all__ = ["BatchAccepted", "BatchRequest", "ItemResult", "routes"]

routes = web.RouteTableDef()


class Template(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    payload: dict[str, Any]
    priority: PriorityLevel = DEFAULT_PRIORITY
    max_attempts: MaxAttempts | None = None
    metadata: Metadata | None = None
    send_at: RequestedTime | None = None  # when every item is due (as on one notification)
    delay_s: Delay | None = None
    deliver_in_window: DeliveryWindow | None = None


class BatchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either ``items`` (full notifications) or ``template`` with ``recipients``."""

    items: list[Any] | None = None
    template: Template | None = None
    recipients: list[Any] | None = None


@routes.post("/api/notifications/batch")
async def create_batch(request: web.Request) -> web.Response:
    require(request, "send")
    settings = request.app[SETTINGS]
    batch = await read_json(request, BatchRequest, settings.max_batch_body_bytes, "$.items")
    results, valid = _check_all(
        _items(batch, settings.batch_max_items), request[TENANT_ID], request.app[SPECS], settings
    )
    if not valid:
        errors = [error for result in results for error in result.errors or []]
        unconfigured = all(error.get("status") == "501" for error in errors)
        status, detail = (
            (501, "no channel of the batch is configured")
            if unconfigured
            else (422, "no item of the batch is valid")
        )
        return problem(status, detail, instance=request.path, errors=errors)
    key = idempotency_key(request, batch)
    where = "$.items" if batch.items is not None else "$.recipients"
    limited = await admit_or_replay(request, len(valid), key, where)
    if isinstance(limited, web.Response):
        return limited
    accept = request.app[ACCEPT]
    answer = render(await accept.batch(valid, results, str(uuid7()), request[TENANT_ID], key))
    answer.headers.update(limited)
    return answer


def _items(batch: BatchRequest, limit: int) -> list[Any]:
    if (batch.items is None) == (batch.template is None):
        raise InvalidInput("send either 'items' or 'template' with 'recipients'", "$.items")
    if batch.template is not None:
        if not batch.recipients:
            raise InvalidInput("a template needs 'recipients'", "$.recipients")
        template = msgspec.to_builtins(batch.template)  # as the client wrote it, for each item
        items = [template | {"recipient": recipient} for recipient in batch.recipients]
        where = "$.recipients"
    else:
        items, where = batch.items or [], "$.items"
    if not items:
        raise InvalidInput("a batch needs at least one item", where)
    if len(items) > limit:
        raise InvalidInput(f"a batch holds at most {limit} items (PULSE_BATCH_MAX_ITEMS)", where)
    return items


def _check_all(
    raw_items: list[Any], tenant_id: str, specs: Mapping[str, ChannelSpec], settings: Settings
) -> tuple[list[ItemResult], list[BatchItem]]:
    """Each item checked on its own, as a single notification would be: its id, or its errors
    (pointers relative to the item list; ``status`` 501 for a channel not configured)."""
    results: list[ItemResult] = []
    valid: list[BatchItem] = []
    for index, raw in enumerate(raw_items):
        try:
            item = _check_one(raw, tenant_id, specs, settings)
        except InvalidInput as exc:
            pointer = f"/{index}" + json_pointer(exc.pointer or "$")
            results.append(
                ItemResult(index=index, errors=[{"detail": exc.detail, "pointer": pointer}])
            )
            continue
        except NotConfigured as exc:
            error = {"detail": str(exc), "pointer": f"/{index}/channel", "status": "501"}
            results.append(ItemResult(index=index, errors=[error]))
            continue
        valid.append(item)
        results.append(ItemResult(index=index, id=item.id))
    return results, valid


def _check_one(
    raw: Any, tenant_id: str, specs: Mapping[str, ChannelSpec], settings: Settings
) -> BatchItem:
    if depth(raw) > settings.max_payload_depth + 4:  # before decoding: no deep recursion
        raise InvalidInput("item is nested too deeply", "$")
    checked = check_item(raw, specs, settings.max_payload_depth)
    item = _item(checked, settings.default_max_attempts)
    item.send_at = checked.due(utcnow(), settings.max_schedule_ahead_s)
    check_streamable(_job(item, tenant_id))
    return item


def _item(checked: CheckedNotification, default_attempts: int) -> BatchItem:
    req = checked.request
    return BatchItem(
        id=str(uuid7()),
        channel=req.channel,
        recipient=checked.recipient,
        payload=req.payload,
        priority=req.priority,
        max_attempts=req.max_attempts or default_attempts,
        metadata=req.metadata,
        fallback=list(checked.fallback) or None,
    )


def _job(item: BatchItem, tenant_id: str) -> Job:
    """The job the fan-out will stream for ``item``."""
    return Job(
        id=item.id,
        tenant_id=tenant_id,
        kind=JobKind.NOTIFICATION,
        channel=item.channel,
        recipient=item.recipient,
        payload=item.payload,
        priority=item.priority,
        max_attempts=item.max_attempts,
        fallback=tuple(item.fallback or ()),
    )
