"""Idempotency keys, listing with filters and cursors, attempts, and cancel, through the API."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.services.accept import fingerprint
from pulse.store.idempotency import IdempotencyStore
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status

pytestmark = pytest.mark.integration


async def count_for(pool: asyncpg.Pool, tenant: NewTenant) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    return count


async def test_same_key_same_body_replays_the_first_answer(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "order-42"}
    first = await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
    # the same body, formatted differently, is the same request
    again = await client.post(
        "/api/notifications/",
        data=msgspec.json.encode(EXAMPLE) + b"  \n",
        headers=headers | {"Content-Type": "application/json"},
    )

    assert first.status == again.status == 202
    assert await first.read() == await again.read()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count_for(pool, tenant) == 1


async def test_same_key_other_body_is_422(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "order-43"}
    await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
    other = EXAMPLE | {"recipient": "else@example.com"}

    response = await client.post("/api/notifications/", json=other, headers=headers)

    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert await count_for(pool, tenant) == 1


async def test_keys_are_scoped_to_their_tenant(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    other = await TenantStore(pool).create("idem-other-" + auth["Authorization"][-6:])
    foreign = {"Authorization": f"Bearer {other.api_key}", "Idempotency-Key": "shared"}
    mine = auth | {"Idempotency-Key": "shared"}

    first = await client.post("/api/notifications/", json=EXAMPLE, headers=mine)
    second = await client.post("/api/notifications/", json=EXAMPLE, headers=foreign)

    assert first.status == second.status == 202
    assert "Idempotent-Replayed" not in second.headers
    assert first.headers["Location"] != second.headers["Location"]


async def test_100_concurrent_identical_requests_create_one_notification(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    headers = auth | {"Idempotency-Key": "burst-1"}

    async def send() -> tuple[int, Any]:
        response = await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
        return response.status, msgspec.json.decode(await response.read())

    answers = await asyncio.gather(*(send() for _ in range(100)))

    assert await count_for(pool, tenant) == 1
    statuses = {status for status, _ in answers}
    assert statuses <= {202, 409}
    assert len({body["id"] for status, body in answers if status == 202}) == 1
    for status, body in answers:
        if status == 409:
            assert body["status"] == 409  # a problem document: still in flight, retry


async def test_a_key_still_in_flight_answers_409(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, settings: Settings, tenant: NewTenant
) -> None:
    store = IdempotencyStore(pool, 3600)
    canonical = fingerprint(_canonical(EXAMPLE))
    async with store.claim(tenant.tenant_id, "slow-1", canonical):  # another request holds it
        response = await client.post(
            "/api/notifications/", json=EXAMPLE, headers=auth | {"Idempotency-Key": "slow-1"}
        )

    assert response.status == 409
    assert response.headers["Retry-After"]
    assert await count_for(pool, tenant) == 0


def _canonical(body: dict[str, Any]) -> Any:
    from pulse.http.validation import NotificationRequest

    return msgspec.convert(body, NotificationRequest)


async def test_expired_keys_are_purged(
    settings: Settings, auth: dict[str, str], pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    brief = msgspec.structs.replace(settings, idempotency_retention_s=0.001)
    async with TestClient(TestServer(create_app(brief, channel_specs(brief)))) as client:
        headers = auth | {"Idempotency-Key": "old-1"}
        assert (
            await client.post("/api/notifications/", json=EXAMPLE, headers=headers)
        ).status == 202
    await asyncio.sleep(0.01)

    assert await IdempotencyStore(pool, 3600).purge_expired() >= 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1", tenant.tenant_id
        )
        == 0
    )


async def post(client: Client, auth: dict[str, str], **changes: Any) -> str:
    response = await client.post("/api/notifications/", json=EXAMPLE | changes, headers=auth)
    assert response.status == 202, await response.text()
    return str(msgspec.json.decode(await response.read())["id"])


async def test_list_filters_paginates_and_stays_in_its_tenant(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    ids = [await post(client, auth, metadata={"order": str(n % 2)}) for n in range(5)]
    log_id = await post(client, auth, channel="log", payload={"message": "hi"}, priority=3)

    everything = await _list(client, auth, "")
    assert [item["id"] for item in everything["items"]] == [log_id, *reversed(ids)]

    odd = await _list(client, auth, "?metadata.order=1&channel=email")
    assert [item["id"] for item in odd["items"]] == [ids[3], ids[1]]
    assert (await _list(client, auth, "?priority=3"))["items"][0]["id"] == log_id

    page1 = await _list(client, auth, "?limit=4")
    page2 = await _list(client, auth, f"?limit=4&cursor={page1['next_cursor']}")
    assert [i["id"] for i in page1["items"] + page2["items"]] == [log_id, *reversed(ids)]
    assert page2["next_cursor"] is None

    other = await TenantStore(pool).create("list-other-" + ids[0][-6:])
    foreign = {"Authorization": f"Bearer {other.api_key}"}
    assert (await _list(client, foreign, ""))["items"] == []

    bad = await client.get("/api/notifications/?priority=urgent", headers=auth)
    assert bad.status == 422
    assert msgspec.json.decode(await bad.read())["errors"][0]["pointer"] == "/priority"


async def _list(client: Client, headers: dict[str, str], query: str) -> Any:
    response = await client.get(f"/api/notifications/{query}", headers=headers)
    assert response.status == 200, await response.text()
    return msgspec.json.decode(await response.read())


async def test_attempts_endpoint_shows_each_attempt(
    client: Client, auth: dict[str, str], worker: Any, pool: asyncpg.Pool
) -> None:
    notification_id = await post(client, auth)
    await wait_for_status(client, auth, f"/api/notifications/{notification_id}", "delivered")

    response = await client.get(f"/api/notifications/{notification_id}/attempts", headers=auth)
    document = msgspec.json.decode(await response.read())

    assert [(a["number"], a["outcome"]) for a in document["attempts"]] == [(1, "delivered")]
    assert [h["status"] for h in document["history"]][-1] == "delivered"
    other = await TenantStore(pool).create("attempts-other-" + notification_id[-6:])
    foreign = {"Authorization": f"Bearer {other.api_key}"}
    path = f"/api/notifications/{notification_id}/attempts"
    assert (await client.get(path, headers=foreign)).status == 404


async def test_cancel_is_durable_and_refuses_work_in_hand(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:
    # Given a queued notification, cancelled before any worker runs
    cancelled_id = await post(client, auth, recipient="cancel-me@example.com")
    response = await client.post(f"/api/notifications/{cancelled_id}/cancel", headers=auth)
    assert response.status == 200
    assert msgspec.json.decode(await response.read())["status"] == "cancelled"
    again = await client.post(f"/api/notifications/{cancelled_id}/cancel", headers=auth)
    assert again.status == 200  # cancelling twice is harmless

    # When a worker then runs, with another notification behind it
    control_id = await post(client, auth)
    start_worker(settings)
    await wait_for_status(client, auth, f"/api/notifications/{control_id}", "delivered")

    # Then the cancelled one was never sent and stays cancelled
    status = await pool.fetchval("SELECT status FROM notifications WHERE id = $1", cancelled_id)
    assert status == "cancelled"
    attempts = await pool.fetchval(
        "SELECT count(*) FROM attempts WHERE notification_id = $1", cancelled_id
    )
    assert attempts == 0

    # And finished or in-hand work cannot be cancelled
    done = await client.post(f"/api/notifications/{control_id}/cancel", headers=auth)
    assert done.status == 409
    assert done.content_type == "application/problem+json"


@pytest.mark.parametrize("status", ["delivering"])
async def test_cancel_of_a_delivery_in_progress_is_409(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool, status: str
) -> None:
    notification_id = await post(client, auth)
    await pool.execute(
        "UPDATE notifications SET status = $2 WHERE id = $1", notification_id, status
    )

    response = await client.post(f"/api/notifications/{notification_id}/cancel", headers=auth)

    assert response.status == 409
    assert status in msgspec.json.decode(await response.read())["detail"]
