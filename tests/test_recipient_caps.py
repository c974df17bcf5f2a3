"""Recipient caps: at most N deliveries to one recipient of a channel per window, over which a
notification waits for the window or ends ``skipped`` (audited, in receipts)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.queue.caps import RecipientWindows
from pulse.queue.keys import QueueKeys
from tests.conftest import Client, WorkerFactory, wait_for_status
from tests.test_receipts import Receiver, local, receiver  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000.0
FINISHED = ("delivered", "failed", "skipped")


async def finish(client: Client, auth: dict[str, str], location: str) -> dict[str, Any]:
    return cast(dict[str, Any], await wait_for_status(client, auth, location, *FINISHED))


def log_to(recipient: str, message: str = "hi") -> dict[str, Any]:
    return {"channel": "log", "recipient": recipient, "payload": {"message": message}}


async def test_a_window_counts_each_notification_once(redis: Redis, keys: QueueKeys) -> None:
    # Given a cap of 2 per second for one recipient
    windows, tenant = RecipientWindows(redis, keys), secrets.token_hex(4)

    async def take(notification: str, now: float) -> int:
        return await windows.take(tenant, "log", "ops", notification, (2, 1000.0), now)

    # When three notifications ask within the window
    assert await take("a", T0) == 0
    assert await take("b", T0 + 300) == 0
    # Then the third waits until the oldest leaves the window, and a retry of one counted
    # notification is not counted again
    assert await take("c", T0 + 400) == 600
    assert await take("a", T0 + 400) == 0
    # And another recipient, or the same one once the window moved on, is not held back
    assert await windows.take(tenant, "log", "dev", "d", (2, 1000.0), T0 + 400) == 0
    assert await take("c", T0 + 1000) == 0


async def test_the_recipient_cap_api(client: Client, auth: dict[str, str]) -> None:
    # Given a tenant's admin key: a cap is set, listed and removed
    put = await client.put(
        "/api/recipient-caps/log", json={"max": 3, "window_s": 60, "over": "skip"}, headers=auth
    )
    assert put.status == 200
    assert (await put.json())["over"] == "skip"
    listed = await (await client.get("/api/recipient-caps", headers=auth)).json()
    assert [(c["channel"], c["max"], c["window_s"]) for c in listed["items"]] == [("log", 3, 60)]
    assert (await client.delete("/api/recipient-caps/log", headers=auth)).status == 204
    assert (await client.delete("/api/recipient-caps/log", headers=auth)).status == 404
    # And nonsense is refused with the field at fault
    bad = await client.put("/api/recipient-caps/log", json={"max": 0, "window_s": 1}, headers=auth)
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["pointer"] == "/max"
    nowhere = await client.put("/api/recipient-caps/pigeon", json={"max": 1, "window_s": 1},
                               headers=auth)  # fmt: skip
    assert nowhere.status == 404


async def test_over_the_cap_ends_skipped_with_its_reason_and_a_receipt(
    local: Settings,  # noqa: F811
    start_worker: WorkerFactory,
    receiver: tuple[Receiver, str],  # noqa: F811
    auth: dict[str, str],
    pool: asyncpg.Pool,
) -> None:
    fake, base = receiver
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        # Given at most 2 log messages per hour to one recipient, skipped over it, and receipts
        cap = {"max": 2, "window_s": 3600, "over": "skip"}
        assert (await client.put("/api/recipient-caps/log", json=cap, headers=auth)).status == 200
        receipts = {"url": f"{base}/receipts", "events": ["skipped"]}
        assert (await client.put("/api/receipts", json=receipts, headers=auth)).status == 200
        # When 4 go to one recipient (one after the other) and 1 to another
        documents = []
        for recipient in ("ops", "ops", "ops", "ops", "dev"):
            sent = await client.post("/api/notifications/", json=log_to(recipient), headers=auth)
            location = sent.headers["Location"]
            documents.append(await finish(client, auth, location))
        arrived = await fake.wait_for(2)
    # Then the first two and the other recipient's are delivered, the rest skipped, untried
    assert [d["status"] for d in documents] == [
        "delivered", "delivered", "skipped", "skipped", "delivered"
    ]  # fmt: skip
    skipped = documents[2]
    assert skipped["last_error"] == "skipped: over the recipient cap of 2 per 3600 s on log"
    assert skipped["attempts"] == 0
    assert [h["status"] for h in skipped["history"]] == ["queued", "delivering", "skipped"]
    # And a receipt reports each skipped one
    events = [msgspec.json.decode(body) for _, body in arrived]
    assert sorted(e["data"]["id"] for e in events) == sorted(d["id"] for d in documents[2:4])
    assert {e["type"] for e in events} == {"notification.skipped"}
    # And nothing was dead-lettered
    dead = await pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE notification_id = $1", skipped["id"]
    )
    assert dead == 0


async def test_over_the_cap_waits_for_the_window_without_using_attempts(
    settings: Settings, client: Client, auth: dict[str, str], start_worker: WorkerFactory,
    pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given at most 2 log messages per 2 s to one recipient, deferred over it
    cap = {"max": 2, "window_s": 2, "over": "defer"}
    assert (await client.put("/api/recipient-caps/log", json=cap, headers=auth)).status == 200
    start_worker(settings)
    # When 4 go to that recipient, each allowed one attempt
    ids = []
    for i in range(4):
        body = log_to("ops", f"m{i}") | {"max_attempts": 1}
        sent = await client.post("/api/notifications/", json=body, headers=auth)
        ids.append((await sent.json())["id"])
    documents = [await finish(client, auth, f"/api/notifications/{i}") for i in ids]
    # Then all are delivered, each with the one attempt it was allowed
    assert [d["status"] for d in documents] == ["delivered"] * 4
    assert all(d["attempts"] == 1 for d in documents)
    # And two of them waited, saying for what
    waited = [
        d for d in documents
        if any("recipient cap of 2 per 2 s on log" in (h.get("detail") or "") for h in d["history"])
    ]  # fmt: skip
    assert len(waited) >= 2
    # And no more than 2 went within any 2 s: the 3rd delivery started at least a window after
    # the 1st was claimed
    started = await pool.fetch(
        "SELECT notification_id::text, min(at) AS at FROM audit"
        " WHERE notification_id = ANY($1::uuid[]) AND status = 'delivering'"
        " GROUP BY notification_id", ids,
    )  # fmt: skip
    delivered = sorted(datetime.fromisoformat(d["delivered_at"]) for d in documents)
    first_claim = min(row["at"] for row in started)
    assert delivered[2] - first_claim >= timedelta(seconds=2)


async def test_an_email_address_counts_as_one_recipient_whatever_its_letter_case(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given a cap of 1 per minute on the email channel
    windows, tenant = RecipientWindows(redis, keys), secrets.token_hex(4)

    async def take(channel: str, recipient: str, notification: str) -> int:
        return await windows.take(tenant, channel, recipient, notification, (1, 60_000.0), T0)

    # When one address is sent to, then the same address in other letter cases
    assert await take("email", "bob@example.com", "a") == 0
    # Then those are over the cap: one mailbox, one window
    assert await take("email", "Bob@EXAMPLE.com", "b") == 60_000
    assert await take("email", "BOB@example.COM", "c") == 60_000
    # And another address, or a recipient of a channel where case matters, is its own
    assert await take("email", "alice@example.com", "d") == 0
    assert await take("log", "Ops", "e") == 0
    assert await take("log", "ops", "f") == 0
