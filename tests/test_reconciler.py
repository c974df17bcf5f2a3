"""The reconciler: committed notifications Redis lost are enqueued again, one copy at a time.

These tests get a database of their own: the reconciler adopts every unfinished notification
in its database, including other tests' leftovers in the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.store.batches import BatchStore
from pulse.store.ledger import DeliveryLedger
from pulse.store.notifications import NewNotification, NotificationStore
from pulse.store.tenants import NewTenant
from tests.conftest import Client, ServerUrls, WorkerFactory, fresh_database, wait_for_status
from tests.queue_view import lose_everything
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp
from tests.test_reliability import column, post

pytestmark = pytest.mark.integration


@pytest.fixture
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    """Overrides the shared database with a fresh one for each test of this module."""
    async with fresh_database(server_urls.postgres, "pulse_reconcile") as url:
        yield url


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


@pytest.fixture
def fast(settings: Settings, smtp: ScriptedSmtp) -> Settings:
    return msgspec.structs.replace(settings, smtp_port=smtp.port, worker_reclaim_interval_ms=50)


async def test_reconciler_enqueues_committed_notifications_redis_lost(
    client: Client,
    auth: dict[str, str],
    fast: Settings,
    start_worker: WorkerFactory,
    redis: Redis,
    pool: asyncpg.Pool,
) -> None:
    # Given an accepted notification whose stream entry Redis lost
    location = await post(client, auth)
    keys = QueueKeys(fast.key_prefix)
    await lose_everything(redis, keys)

    # When a worker's reconciler runs
    start_worker(msgspec.structs.replace(fast, reconcile_interval_s=0.2, reconcile_after_s=0.1))

    # Then it is enqueued again and delivered, and the audit says so
    document = await wait_for_status(client, auth, location, "delivered")
    details = await column(
        pool, "SELECT detail FROM audit WHERE notification_id = $1 ORDER BY id", str(document["id"])
    )
    assert "re-enqueued: missing from Redis" in details


async def test_a_dead_reconciler_lock_blocks_only_until_it_expires(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    from pulse.queue.index import JobIndex
    from pulse.queue.lock import ExpiringLock
    from pulse.runtime.reconciler import Reconciler, ReconcilerSettings

    keys = QueueKeys(settings.key_prefix)
    lock_key = keys.lock("reconciler")
    await redis.set(lock_key, "a-holder-that-was-sigkilled", px=300)
    reconciler = Reconciler(
        DeliveryLedger(pool),
        BatchStore(pool),
        JobIndex(redis, keys),
        Publisher(redis, keys),
        ExpiringLock(redis, lock_key, 30_000),
        ReconcilerSettings(interval_s=1, older_than_s=3600),
        "test",
    )

    assert not await ExpiringLock(redis, lock_key, 1000).acquire()  # held
    await asyncio.sleep(0.4)
    assert await reconciler.reconcile_once() == 0  # ran: the lock had expired
    assert await redis.get(lock_key) is None  # and released its own lock


async def test_no_requeued_audit_row_for_a_notification_settled_meanwhile(
    pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    """The reconciler reads unfinished notifications, then asks Redis which are missing; the
    holder may settle one in between. Its history must still end with the final status."""
    store = NotificationStore(pool)
    ids = [str(uuid7()) for _ in range(2)]
    for notification_id in ids:
        await store.insert(
            NewNotification(
                id=notification_id, tenant_id=tenant.tenant_id, channel="email",
                recipient="a@example.com", payload_json=b'{"subject": "s", "body": "b"}',
                priority=1, max_attempts=3,
            )
        )  # fmt: skip
    settled, still_open = ids
    await pool.execute("UPDATE notifications SET status = 'delivered' WHERE id = $1", settled)

    async with DeliveryLedger(pool).requeueing(ids, "test") as noted:
        pass

    history = "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id"
    assert noted == {still_open}  # only it is streamed again
    assert await column(pool, history, settled) == ["queued"]  # nothing after delivered
    assert await column(pool, history, still_open) == ["queued", "queued"]


async def test_one_job_the_stream_cannot_carry_fails_alone_and_the_page_is_recovered(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    from pulse.queue.index import JobIndex
    from pulse.queue.lock import ExpiringLock
    from pulse.runtime.reconciler import Reconciler, ReconcilerSettings

    # Given: two committed notifications Redis never got, one of them with a payload integer
    # beyond 64 bits (PostgreSQL holds it; the stream message cannot)
    store = NotificationStore(pool)
    payloads = {
        "bad": b'{"subject": "s", "body": "b", "n": 123456789012345678901234567890}',
        "good": b'{"subject": "s", "body": "b"}',
    }
    ids = {name: str(uuid7()) for name in payloads}
    for name, payload in payloads.items():
        await store.insert(
            NewNotification(
                id=ids[name], tenant_id=tenant.tenant_id, channel="email",
                recipient="a@example.com", payload_json=payload, priority=1, max_attempts=3,
            )
        )  # fmt: skip
    await pool.execute(
        "UPDATE notifications SET updated_at = now() - interval '1 minute'"
        " WHERE id = ANY($1::uuid[])",
        list(ids.values()),
    )
    keys = QueueKeys(settings.key_prefix)
    reconciler = Reconciler(
        DeliveryLedger(pool),
        BatchStore(pool),
        JobIndex(redis, keys),
        Publisher(redis, keys),
        ExpiringLock(redis, keys.lock("reconciler"), 30_000),
        ReconcilerSettings(interval_s=1, older_than_s=30),
        "test",
    )

    # When: the reconciler runs twice
    first = await reconciler.reconcile_once()
    second = await reconciler.reconcile_once()

    # Then: the good one is streamed again (and audited so); the bad one failed with its
    # reason, audited, never streamed nor claimed to be; the second pass finds nothing
    history = "SELECT status, detail FROM audit WHERE notification_id = $1 ORDER BY id"
    bad = await pool.fetchrow("SELECT status, last_error FROM notifications WHERE id = $1",
                              ids["bad"])  # fmt: skip
    assert (first, second) == (1, 0)
    assert await JobIndex(redis, keys).missing(list(ids.values())) == [ids["bad"]]
    assert [tuple(r) for r in await pool.fetch(history, ids["good"])] == [
        ("queued", None), ("queued", "re-enqueued: missing from Redis"),
    ]  # fmt: skip
    assert bad is not None
    assert bad["status"] == "failed"
    assert bad["last_error"].startswith("cannot be streamed: can't serialize ints")
    bad_history = [tuple(r) for r in await pool.fetch(history, ids["bad"])]
    assert bad_history == [("queued", None), ("failed", bad["last_error"])]


async def test_no_requeued_audit_row_when_the_stream_could_not_take_it(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    from pulse.devtools.ports import free_port
    from pulse.queue.errors import TRANSIENT_REDIS_ERRORS
    from pulse.queue.index import JobIndex
    from pulse.queue.lock import ExpiringLock
    from pulse.runtime.reconciler import Reconciler, ReconcilerSettings

    # Given: a committed notification Redis lost, and a stream that refuses connections
    notification_id = str(uuid7())
    await NotificationStore(pool).insert(
        NewNotification(
            id=notification_id, tenant_id=tenant.tenant_id, channel="email",
            recipient="a@example.com", payload_json=b'{"subject": "s", "body": "b"}',
            priority=1, max_attempts=3,
        )
    )  # fmt: skip
    await pool.execute(
        "UPDATE notifications SET updated_at = now() - interval '1 minute' WHERE id = $1",
        notification_id,
    )
    keys = QueueKeys(settings.key_prefix)
    unreachable = Redis(host="127.0.0.1", port=free_port("127.0.0.1"), socket_timeout=1)
    reconciler = Reconciler(
        DeliveryLedger(pool),
        BatchStore(pool),
        JobIndex(redis, keys),
        Publisher(unreachable, keys),
        ExpiringLock(redis, keys.lock("reconciler"), 30_000),
        ReconcilerSettings(interval_s=1, older_than_s=30),
        "test",
    )

    # When: the reconciler runs
    with pytest.raises(TRANSIENT_REDIS_ERRORS):
        await reconciler.reconcile_once()
    await unreachable.aclose()

    # Then: its history does not claim a re-enqueueing that did not happen
    history = "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id"
    assert await column(pool, history, notification_id) == ["queued"]
