"""A batch item's id answers as soon as the batch is accepted, before a worker fans it out:
``queued`` (or ``scheduled``, with its ``send_at``), to its own tenant only."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from pulse.config import Settings
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import Client, WorkerFactory

pytestmark = pytest.mark.integration

LOG_ITEM = {"channel": "log", "recipient": "user-1", "payload": {"message": "hello"}}


async def get(client: Client, path: str, auth: dict[str, str]) -> tuple[int, Any]:
    response = await client.get(path, headers=auth)
    return response.status, msgspec.json.decode(await response.read())


async def test_items_of_a_batch_not_yet_fanned_out_answer_queued_or_scheduled(
    client: Client,
    auth: dict[str, str],
    other_auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    due = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    items = [LOG_ITEM, LOG_ITEM | {"priority": 4, "send_at": due.isoformat()}]
    # Given a batch accepted while no worker runs
    response = await client.post("/api/notifications/batch", json={"items": items}, headers=auth)
    assert response.status == 202
    now_id, later_id = [r["id"] for r in msgspec.json.decode(await response.read())["items"]]

    # Then each item reads back at once, as its request asked
    status, now = await get(client, f"/api/notifications/{now_id}", auth)
    assert status == 200
    assert (now["id"], now["status"], now["channel"], now["recipient"]) == (
        now_id, "queued", "log", "user-1",
    )  # fmt: skip
    assert now["payload"] == {"message": "hello"}
    assert now["attempts"] == 0
    status, later = await get(client, f"/api/notifications/{later_id}", auth)
    assert status == 200
    assert (later["status"], later["priority"]) == ("scheduled", 4)
    assert datetime.fromisoformat(later["send_at"]) == due
    status, attempts = await get(client, f"/api/notifications/{now_id}/attempts", auth)
    assert (status, attempts["id"], attempts["attempts"]) == (200, now_id, [])

    # And another tenant does not see them
    assert (await get(client, f"/api/notifications/{now_id}", other_auth))[0] == 404
    assert (await get(client, f"/api/notifications/{now_id}/attempts", other_auth))[0] == 404

    # When a worker fans the batch out, the item answers from its own row
    start_worker(settings)
    for _ in range(600):
        status, now = await get(client, f"/api/notifications/{now_id}", auth)
        if now["status"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert now["status"] == "delivered"
    assert (await get(client, f"/api/notifications/{later_id}", auth))[1]["status"] == "scheduled"


@pytest.fixture
async def other_auth(pool: asyncpg.Pool) -> dict[str, str]:
    other: NewTenant = await TenantStore(pool).create(f"other-{secrets.token_hex(4)}")
    return {"Authorization": f"Bearer {other.api_key}"}


async def test_an_item_not_yet_fanned_out_asks_to_retry_its_cancel_or_move(
    client: Client, auth: dict[str, str]
) -> None:
    """Not a 404 (the id exists) nor a silent success (the worker would send it anyway): a 409
    with Retry-After, as for a key still in flight."""
    response = await client.post(
        "/api/notifications/batch", json={"items": [LOG_ITEM]}, headers=auth
    )
    [item] = msgspec.json.decode(await response.read())["items"]
    path = f"/api/notifications/{item['id']}"

    cancel = await client.post(f"{path}/cancel", headers=auth)
    patch = await client.patch(path, json={"delay_s": 60}, headers=auth)

    assert (cancel.status, patch.status) == (409, 409)
    assert cancel.headers["Retry-After"] == patch.headers["Retry-After"] == "1"
    assert "fanned out" in (await cancel.json())["detail"]
