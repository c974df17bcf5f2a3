"""A message that makes its channel raise fails alone; a breaker's refusal costs no attempt.

The poison message is committed and streamed directly (as a message accepted before the API
checked such values would be): the worker must cope with it, whatever the accept path refuses.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.http.app import create_app
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.store.notifications import NewNotification, NotificationStore
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import EXAMPLE, RunningWorker, WorkerFactory, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration

POISON_SUBJECT = "Hello\u2028there"  # the mail library raises while folding this header


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


async def commit_and_stream(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, tenant_id: str, payload: dict[str, str]
) -> str:
    """An email notification committed and streamed without the API's checks."""
    job = Job(
        id=str(uuid7()), tenant_id=tenant_id, kind=JobKind.NOTIFICATION, channel="email",
        recipient="someone@example.com", payload=payload, priority=1, max_attempts=5,
    )  # fmt: skip
    await NotificationStore(pool).insert(
        NewNotification(
            id=job.id, tenant_id=tenant_id, channel="email", recipient=job.recipient,
            payload_json=msgspec.json.encode(payload), priority=1, max_attempts=5,
        )
    )  # fmt: skip
    await Publisher(redis, QueueKeys(settings.key_prefix)).publish([job])
    return job.id


def circuit_state(worker: RunningWorker, provider: str) -> float:
    text = worker.worker.metrics.exposition().decode()
    found = re.search(rf'pulse_provider_circuit_state{{provider="{provider}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


async def test_a_poison_message_fails_alone_and_never_opens_the_shared_breaker(
    settings: Settings,
    start_worker: WorkerFactory,
    smtp: ScriptedSmtp,
    pool: asyncpg.Pool,
    redis: Redis,
    tenant: NewTenant,
) -> None:
    # Given: a breaker that opens after two provider faults, and three poison mails of one
    # tenant that make the email channel raise
    local = msgspec.structs.replace(
        settings, smtp_port=smtp.port, breaker_failures=2, breaker_cooldown_s=60.0
    )
    worker = start_worker(local)
    other = await TenantStore(pool).create("other-tenant")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}
    poison = {"subject": POISON_SUBJECT, "body": "b"}
    ids = [await commit_and_stream(pool, redis, local, tenant.tenant_id, poison) for _ in range(3)]
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        for notification_id in ids:
            await wait_for_status(
                client,
                {"Authorization": f"Bearer {tenant.api_key}"},
                f"/api/notifications/{notification_id}",
                "failed",
                "delivered",
            )

        # When: another tenant sends an ordinary mail
        response = await client.post("/api/notifications/", json=EXAMPLE, headers=other_auth)
        location = response.headers["Location"]
        document = await wait_for_status(client, other_auth, location, "delivered", "failed")
        attempts = await client.get(location + "/attempts", headers=other_auth)
        rows = msgspec.json.decode(await attempts.read())["attempts"]

    # Then: each poison mail failed for good after one try, the breaker stayed closed, and the
    # other tenant's mail went straight to the relay
    poisoned = await pool.fetch(
        "SELECT status, attempts FROM notifications WHERE id = ANY($1::uuid[])", ids
    )
    assert [(row["status"], row["attempts"]) for row in poisoned] == [("failed", 1)] * 3
    assert circuit_state(worker, "smtp") == 0
    assert document["status"] == "delivered"
    assert [(row["provider"], row["outcome"]) for row in rows] == [("smtp", "delivered")]
    assert sum(smtp.handler.accepted.values()) == 1


async def test_a_retry_refused_by_an_open_breaker_keeps_its_attempts(
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    auth: dict[str, str],
) -> None:
    # Given: a relay that refuses connections (its breaker opens at the first fault) and a
    # notification allowed two attempts
    relay = ScriptedSmtp(ScriptedHandler())
    local = msgspec.structs.replace(
        settings,
        smtp_port=relay.port,
        breaker_failures=1,
        breaker_cooldown_s=1.5,
        retry_base_s=0.05,
        retry_cap_s=0.05,
        worker_reclaim_interval_ms=50,
    )
    start_worker(local)
    async with TestClient(TestServer(create_app(local, channel_specs(local)))) as client:
        body = dict(EXAMPLE) | {"max_attempts": 2}
        response = await client.post("/api/notifications/", json=body, headers=auth)
        location = response.headers["Location"]
        notification_id = location.rsplit("/", 1)[-1]

        # When: its retry is refused by the open breaker, and the relay comes back meanwhile
        await wait_for_attempt_row(pool, notification_id, "CircuitOpen")
        relay.start()
        try:
            document = await wait_for_status(client, auth, location, "delivered", "failed")
        finally:
            relay.stop()

    # Then: the refusal cost no attempt: the probe after the cool-down was its second
    # attempt, and it delivered
    calls = await pool.fetch(
        "SELECT number, provider, outcome FROM attempts"
        " WHERE notification_id = $1 AND provider IS NOT NULL ORDER BY id",
        notification_id,
    )
    assert document["status"] == "delivered"
    assert [tuple(row) for row in calls] == [(1, "smtp", "retry"), (2, "smtp", "delivered")]
    assert document["attempts"] == 2
    assert sum(relay.handler.accepted.values()) == 1


async def wait_for_attempt_row(pool: asyncpg.Pool, notification_id: str, error_class: str) -> None:
    """Poll the attempt rows until one of ``error_class`` shows; give up after a minute."""
    for _ in range(1200):
        found = await pool.fetchval(
            "SELECT count(*) FROM attempts WHERE notification_id = $1 AND error_class = $2",
            notification_id,
            error_class,
        )
        if found:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {error_class} attempt for {notification_id}")


async def test_an_attempt_not_made_is_given_back_to_the_stream(
    settings: Settings, redis: Redis
) -> None:
    from pulse.core.timeutil import now_ms
    from pulse.queue.consumer import Consumer
    from pulse.queue.pending import PendingEntries
    from pulse.queue.transitions import EntryRef, SettledBatch, Transitions
    from tests.test_codec import a_job

    # Given: two entries read once (attempt 1 each)
    keys = QueueKeys(settings.key_prefix)
    publisher = Publisher(redis, keys)
    await publisher.publish([a_job(), a_job()])
    consumer = Consumer(redis, keys, "w1")
    await consumer.ensure_group()
    made, not_made = [
        EntryRef(entry.stream, entry.entry_id, entry.job_id)
        for entry in await consumer.read({keys.stream(1): 2})
    ]

    # When: one is retried after a provider call, the other after none was made
    retries = [(made, now_ms(), True), (not_made, now_ms(), False)]
    applied = await Transitions(redis, keys, "w1").apply(SettledBatch(retries=retries), now_ms())
    pending = PendingEntries(redis, keys, "w1")
    again = await pending.reclaim(keys.stream(1), now_ms(), lease_ms=60_000, limit=10)

    # Then: the first comes back as attempt 2, the second as attempt 1 again
    attempts = {entry.entry_id: entry.attempt for entry in again}
    assert applied.error is None
    assert attempts == {made.entry_id: 2, not_made.entry_id: 1}
