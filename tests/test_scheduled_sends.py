"""Scheduled sends through the API and a worker: accepted as scheduled, committed with the due
time, indexed in Redis by it, streamed once due and not before, delivered once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
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
    assert (await QueueStats(redis, keys).snapshot()).streams[1].depth == 0
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
    assert (await QueueStats(redis, keys).snapshot()).streams[2].depth == 2


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"send_at": "2030-01-01T10:00:00", "priority": 2}, "/send_at"),  # no offset
        ({"send_at": "tomorrow"}, "/send_at"),
        ({"delay_s": -1}, "/delay_s"),
        ({"delay_s": 60, "send_at": "2030-01-01T10:00:00Z"}, "/delay_s"),
        ({"delay_s": 400 * 86_400}, "/delay_s"),
        ({"send_at": "2099-01-01T00:00:00Z"}, "/send_at"),
        ({"send_at": "9999-12-31T23:59:59-01:00"}, "/send_at"),
        ({"send_at": "0001-01-01T00:00:00+01:00"}, "/send_at"),
        ({"deliver_in_window": {"tz": "Mars/Base", "from": "08:00", "to": "21:00"}},
         "/deliver_in_window/tz"),
        ({"deliver_in_window": {"tz": "America", "from": "08:00", "to": "21:00"}},
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
    workers = [start_worker(settings), start_worker(settings)]
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
    # and the scheduler that streamed it measured how late it was
    counts = [
        running.worker.metrics.registry.get_sample_value("pulse_schedule_lateness_seconds_count")
        for running in workers
    ]
    assert sum(count or 0 for count in counts) == 1


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


async def test_cancel_a_scheduled_notification(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, redis: Redis, keys: QueueKeys
) -> None:
    # Given a scheduled notification
    _, body = await send(client, auth, delay_s=3600)
    # When it is cancelled
    response = await client.post(f"/api/notifications/{body['id']}/cancel", headers=auth)
    # Then it is cancelled for good, audited, and gone from the due-time index
    assert response.status == 200, await response.text()
    assert msgspec.json.decode(await response.read())["status"] == "cancelled"
    assert await history(pool, body["id"]) == ["scheduled", "cancelled"]
    assert await redis.zscore(keys.scheduled(2), body["id"]) is None
    assert not await redis.hexists(keys.scheduled_jobs(), body["id"])


async def test_reschedule_moves_the_due_time(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, redis: Redis, keys: QueueKeys
) -> None:
    # Given a notification scheduled in an hour
    _, body = await send(client, auth, delay_s=3600)
    # When it is rescheduled to a given time two days ahead
    new = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    response = await client.patch(
        f"/api/notifications/{body['id']}", json={"send_at": iso(new)}, headers=auth
    )
    # Then the view, the row, the audit and the index all say the new time
    view = msgspec.json.decode(await response.read())
    assert response.status == 200, view
    assert (view["status"], datetime.fromisoformat(view["send_at"])) == ("scheduled", new)
    assert await history(pool, body["id"]) == ["scheduled", "scheduled"]
    assert await redis.zscore(keys.scheduled(2), body["id"]) == new.timestamp() * 1000


async def test_reschedule_to_now_sends_it(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    _, body = await send(client, auth, delay_s=3600)
    start_worker(settings)
    response = await client.patch(
        f"/api/notifications/{body['id']}", json={"delay_s": 0}, headers=auth
    )
    assert response.status == 200, await response.text()
    done = await wait_for_status(client, auth, f"/api/notifications/{body['id']}", "delivered")
    assert done["status"] == "delivered"


async def test_reschedule_what_is_no_longer_scheduled_is_409(
    client: Client, auth: dict[str, str]
) -> None:
    # Given a notification queued at once, and one cancelled
    _, queued = await send(client, auth)
    _, cancelled = await send(client, auth, delay_s=60)
    await client.post(f"/api/notifications/{cancelled['id']}/cancel", headers=auth)
    for body, status in ((queued, "queued"), (cancelled, "cancelled")):
        # When either is rescheduled
        response = await client.patch(
            f"/api/notifications/{body['id']}", json={"delay_s": 60}, headers=auth
        )
        # Then the answer is a 409 problem naming its status
        assert response.status == 409
        assert response.content_type == "application/problem+json"
        assert status in msgspec.json.decode(await response.read())["detail"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [({}, "/send_at"), ({"delay_s": "soon"}, "/delay_s"), ({"send_at": "2030-01-01"}, "/send_at"),
     ({"priority": 1}, "/priority"), ({"delay_s": 10**9}, "/delay_s")],
)  # fmt: skip
async def test_bad_reschedules_are_422(
    client: Client, auth: dict[str, str], body: dict[str, Any], pointer: str
) -> None:
    _, created = await send(client, auth, delay_s=60)
    response = await client.patch(f"/api/notifications/{created['id']}", json=body, headers=auth)
    problem = msgspec.json.decode(await response.read())
    assert response.status == 422, problem
    assert [error["pointer"] for error in problem["errors"]] == [pointer]


async def test_reschedule_an_unknown_notification_is_404(
    client: Client, auth: dict[str, str]
) -> None:
    unknown = "0190a0a0-0000-7000-8000-000000000000"
    response = await client.patch(
        f"/api/notifications/{unknown}", json={"delay_s": 5}, headers=auth
    )
    assert response.status == 404


async def test_list_scheduled_by_due_time(client: Client, auth: dict[str, str]) -> None:
    # Given notifications due in 1 h, 2 h and 3 h, and one sent at once
    ids = [(await send(client, auth, delay_s=h * 3600))[1]["id"] for h in (1, 2, 3)]
    await send(client, auth)
    now = datetime.now(UTC)
    # When the list asks for scheduled ones due between 90 min and 150 min from now
    query = {
        "status": "scheduled",
        "due_after": iso(now + timedelta(minutes=90)),
        "due_before": iso(now + timedelta(minutes=150)),
    }
    response = await client.get("/api/notifications/", params=query, headers=auth)
    listed = msgspec.json.decode(await response.read())
    # Then only the one due in two hours is listed
    assert response.status == 200, listed
    assert [item["id"] for item in listed["items"]] == [ids[1]]
    scheduled = await client.get(
        "/api/notifications/", params={"status": "scheduled"}, headers=auth
    )
    assert len(msgspec.json.decode(await scheduled.read())["items"]) == 3


async def test_redis_down_at_accept_withdraws_a_scheduled_one_or_keeps_it_with_a_key(
    settings: Settings, auth: dict[str, str], pool: asyncpg.Pool, tenant: Any
) -> None:
    down = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    body = LOG | {"delay_s": 3600}
    async with TestClient(TestServer(create_app(down, channel_specs(down)))) as api:
        # Without a key: 503, nothing kept (the client's retry is the only copy)
        plain = await api.post("/api/notifications/", json=body, headers=auth)
        # With a key: 503, kept 'scheduled' for the reconciler to index
        keyed = await api.post(
            "/api/notifications/", json=body, headers=auth | {"Idempotency-Key": "k-1"}
        )
    assert (plain.status, keyed.status) == (503, 503)
    rows = await pool.fetch(
        "SELECT status FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    assert [row[0] for row in rows] == ["scheduled"]
