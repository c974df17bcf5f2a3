"""``POST /api/notifications/batch``: many items, or one template with many recipients.

Every item is validated on its own and answered on its own (its id, or its errors); the valid
ones are committed as one batch and fanned out by a worker, not in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pulse.core.errors import InvalidInput, Unavailable
from pulse.core.ids import uuid7
from pulse.core.models import DEFAULT_PRIORITY, MaxAttempts, PriorityLevel
from pulse.core.ports import ChannelSpec
from pulse.http.auth import require
from pulse.http.problems import json_pointer, problem
from pulse.http.responses import decode_body, from_db, json_response
from pulse.http.state import BATCHES, METRICS, PUBLISHER, SETTINGS, SPECS, TENANT_ID
from pulse.http.validation import Metadata, check_item, depth
from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
from pulse.store.batches import BatchItem, fanout_job

routes = web.RouteTableDef()


class Template(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    payload: dict[str, Any]
    priority: PriorityLevel = DEFAULT_PRIORITY
    max_attempts: MaxAttempts | None = None
    metadata: Metadata | None = None


class BatchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either ``items`` (full notifications) or ``template`` with ``recipients``."""

    items: list[Any] | None = None
    template: Template | None = None
    recipients: list[Any] | None = None


class ItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | None = None
    errors: list[dict[str, str]] | None = None


class BatchAccepted(msgspec.Struct, kw_only=True):
    batch_id: str
    accepted: int
    rejected: int
    items: list[ItemResult]


@routes.post("/api/notifications/batch")
async def create_batch(request: web.Request) -> web.Response:
    require(request, "send")
    settings = request.app[SETTINGS]
    raw_items = _items(decode_body(await request.read(), BatchRequest), settings.batch_max_items)
    results, valid = _check_all(raw_items, request.app[SPECS], settings)
    rejected = len(results) - len(valid)
    if not valid:
        errors = [error for result in results for error in result.errors or []]
        return problem(422, "no item of the batch is valid", instance=request.path, errors=errors)
    batch_id = str(uuid7())
    priority = min(item.priority for item in valid)
    batches = request.app[BATCHES]
    await from_db(batches.insert(batch_id, request[TENANT_ID], valid, priority))
    try:
        await request.app[PUBLISHER].publish([fanout_job(batch_id, request[TENANT_ID], priority)])
    except TRANSIENT_REDIS_ERRORS:
        await from_db(batches.withdraw(batch_id))
        raise Unavailable("the queue is unreachable; nothing was accepted") from None
    request.app[METRICS].count_accepted((item.channel, item.priority) for item in valid)
    body = BatchAccepted(batch_id=batch_id, accepted=len(valid), rejected=rejected, items=results)
    return json_response(body, status=202)


def _items(batch: BatchRequest, limit: int) -> list[Any]:
    if (batch.items is None) == (batch.template is None):
        raise InvalidInput("send either 'items' or 'template' with 'recipients'", "$.items")
    if batch.template is not None:
        if not batch.recipients:
            raise InvalidInput("a template needs 'recipients'", "$.recipients")
        template = msgspec.structs.asdict(batch.template)
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
    raw_items: list[Any], specs: Mapping[str, ChannelSpec], settings: Any
) -> tuple[list[ItemResult], list[BatchItem]]:
    results: list[ItemResult] = []
    valid: list[BatchItem] = []
    for index, raw in enumerate(raw_items):
        try:
            if depth(raw) > settings.max_payload_depth + 4:  # before decoding: no deep recursion
                raise InvalidInput("item is nested too deeply", "$")
            checked = check_item(raw, specs, settings.max_payload_depth)
        except InvalidInput as exc:
            pointer = f"/{index}" + json_pointer(exc.pointer or "$")
            error = {"detail": exc.detail, "pointer": pointer}
            results.append(ItemResult(index=index, errors=[error]))
            continue
        req = checked.request
        item = BatchItem(
            id=str(uuid7()),
            channel=req.channel,
            recipient=checked.recipient,
            payload=req.payload,
            priority=req.priority,
            max_attempts=req.max_attempts or settings.default_max_attempts,
            metadata=req.metadata,
            fallback=list(checked.fallback) or None,
        )
        valid.append(item)
        results.append(ItemResult(index=index, id=item.id))
    return results, valid
