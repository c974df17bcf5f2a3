"""Scheduled sends through the API and a worker: accepted as scheduled, committed with the due
time, indexed in Redis by it, streamed once due and not before, delivered once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.queue.keys import QueueKeys
from tests.conftest import Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration

LOG = {"recipient": "ops", "channel": "log", "payload": {"message": "later"}}


def iso(at: datetime) -> str:
    return at.isoformat()


async def send(client: Client, auth: dict[str, str], **changes: Any) -> tuple[int, Any]:
    response = await client.post("/api/notifications/", json=LOG | changes, headers=auth)
    return response.status, msgspec.json.decode(await response.read())


async def history(pool: asyncpg.Pool, notification_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id", notification_id
    )
    return [row[0] for row in rows]


async def test_future_send_at_is_accepted_as_scheduled_and_committed(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, redis: Redis, keys: QueueKeys
) -> None:
    # Given a time an hour ahead, written with a +02:00 offset
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    local = due.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    # When it is sent with that send_at
    status, body = await send(client, auth, send_at=local, priority=1)
    # Then it is accepted as scheduled, with its due time, committed and audited
    assert status == 202, body
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["send_at"]) == due
    row = await pool.fetchrow("SELECT status, send_at FROM notifications WHERE id = $1", body["id"])
    assert row is not None
    assert (row["status"], row["send_at"]) == ("scheduled", due)
    assert await history(pool, body["id"]) == ["scheduled"]
    # and Redis holds it in the due-time index of its priority, not in a stream
    assert await redis.zscore(keys.scheduled(1), body["id"]) == due.timestamp() * 1000
    assert await redis.xlen(keys.stream(1)) == 0
    # and its view shows send_at
    view = msgspec.json.decode(await (await client.get(f"/api/notifications/{body['id']}",
                                                        headers=auth)).read())  # fmt: skip
    assert view["status"] == "scheduled"
    assert datetime.fromisoformat(view["send_at"]) == due


async def test_past_or_zero_delay_is_queued_at_once(
    client: Client, auth: dict[str, str], redis: Redis, keys: QueueKeys
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    for changes in ({"send_at": iso(past)}, {"delay_s": 0}):
        status, body = await send(client, auth, **changes)
        assert status == 202, body
        assert body["status"] == "queued"
    assert await redis.xlen(keys.stream(2)) == 2


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"send_at": "2030-01-01T10:00:00", "priority": 2}, "/send_at"),  # no offset
        ({"send_at": "tomorrow"}, "/send_at"),
        ({"delay_s": -1}, "/delay_s"),
        ({"delay_s": 60, "send_at": "2030-01-01T10:00:00Z"}, "/delay_s"),
        ({"delay_s": 400 * 86_400}, "/delay_s"),
        ({"send_at": "2099-01-01T00:00:00Z"}, "/send_at"),
        ({"deliver_in_window": {"tz": "Mars/Base", "from": "08:00", "to": "21:00"}},
         "/deliver_in_window/tz"),
        ({"deliver_in_window": {"tz": "UTC", "from": "8h", "to": "21:00"}},
         "/deliver_in_window/from"),
    ],
)  # fmt: skip
async def test_bad_schedules_are_422_naming_the_field(
    client: Client, auth: dict[str, str], changes: dict[str, Any], pointer: str
) -> None:
    status, body = await send(client, auth, **changes)
    assert status == 422, body
    assert [error["pointer"] for error in body["errors"]] == [pointer]


async def test_quiet_hours_defer_to_the_next_window(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Given a window that is closed now (it opens two hours from now, UTC)
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=2)).replace(second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    window = {"tz": "UTC", "from": opens.strftime("%H:%M"), "to": closes.strftime("%H:%M")}
    # When a notification is sent now with it
    status, body = await send(client, auth, deliver_in_window=window)
    # Then it is scheduled for the window's opening
    assert status == 202, body
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["send_at"]) == opens


async def test_due_notifications_are_streamed_once_due_and_delivered_once(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:
    # Given two workers, and notifications due in 1 s and in an hour
    start_worker(settings)
    start_worker(settings)
    _, soon = await send(client, auth, delay_s=1)
    _, later = await send(client, auth, delay_s=3600)
    assert soon["status"] == later["status"] == "scheduled"
    # When the first falls due
    location = f"/api/notifications/{soon['id']}"
    done = await wait_for_status(client, auth, location, "delivered", "failed")
    # Then it is delivered once, not before its time, with a complete history
    assert done["status"] == "delivered"
    assert await history(pool, soon["id"]) == ["scheduled", "queued", "delivering", "delivered"]
    delivered_at = await pool.fetchval(
        "SELECT delivered_at FROM notifications WHERE id = $1", soon["id"]
    )
    assert delivered_at >= datetime.fromisoformat(soon["send_at"])
    attempts = await pool.fetchval(
        "SELECT count(*) FROM attempts WHERE notification_id = $1", soon["id"]
    )
    assert attempts == 1
    # and the other is still waiting
    await asyncio.sleep(0.5)
    assert await history(pool, later["id"]) == ["scheduled"]


async def test_batch_items_can_be_scheduled(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:
    # Given a batch: one item now, one in an hour, one with an invalid send_at
    items = [
        LOG,
        LOG | {"delay_s": 3600},
        LOG | {"send_at": "2030-01-01"},
    ]
    response = await client.post("/api/notifications/batch", json={"items": items}, headers=auth)
    body = msgspec.json.decode(await response.read())
    assert response.status == 202, body
    assert body["items"][2]["errors"][0]["pointer"] == "/2/send_at"
    now_id, later_id = body["items"][0]["id"], body["items"][1]["id"]
    # When a worker fans it out
    start_worker(settings)
    await wait_for_status(client, auth, f"/api/notifications/{now_id}", "delivered")
    # Then the later item is scheduled, due in an hour
    row = await pool.fetchrow("SELECT status, send_at FROM notifications WHERE id = $1", later_id)
    assert row is not None
    assert row["status"] == "scheduled"
    assert row["send_at"] > datetime.now(UTC) + timedelta(minutes=59)


async def test_template_batch_with_delay_schedules_every_recipient(
    client: Client, auth: dict[str, str], settings: Settings, start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:  # fmt: skip
    template = {"channel": "log", "payload": {"message": "hi"}, "delay_s": 3600}
    response = await client.post(
        "/api/notifications/batch",
        json={"template": template, "recipients": ["a", "b"]},
        headers=auth,
    )
    body = msgspec.json.decode(await response.read())
    assert response.status == 202, body
    start_worker(settings)
    ids = [item["id"] for item in body["items"]]
    for _ in range(200):
        statuses = await pool.fetch("SELECT status FROM notifications WHERE id = ANY($1)", ids)
        if len(statuses) == 2:
            break
        await asyncio.sleep(0.05)
    assert [row[0] for row in statuses] == ["scheduled", "scheduled"]
