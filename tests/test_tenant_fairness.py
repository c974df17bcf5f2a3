"""Fairness between tenants inside a priority, on a live worker (PULSE_TENANT_FAIRNESS, on by
default): a small tenant's notifications are not queued behind another tenant's backlog, and a
tenant's lane loses nothing when its worker is SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import msgspec
import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from bench.fairness import delivered, enqueue_for
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.queue.consumer import Consumer
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
from pulse.queue.tenant_streams import TenantStreams
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.queue_view import placed
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp
from tests.test_crash import StallingHandler, wait_for_claim, worker_env

pytestmark = pytest.mark.system

BACKLOG = 4_000
SMALL = 20


@pytest.fixture
def stalling_smtp() -> Iterator[tuple[Controller, StallingHandler]]:
    """A mail server that never answers DATA: a delivery to it stays in flight."""
    handler = StallingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port("127.0.0.1"))
    controller.start()
    yield controller, handler
    controller.stop()


async def wait_delivered(pool: asyncpg.Pool, ids: list[str], count: int) -> None:
    for _ in range(6000):
        if await delivered(pool, ids) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not delivered")


async def test_a_small_tenant_is_served_among_the_next_rounds_not_after_the_backlog(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    fair = msgspec.structs.replace(settings, tenant_fairness=True, log_level="WARNING")
    prefix = settings.key_prefix
    # Given tenant A's backlog at priority 2, being drained by a fair worker
    backlog = await enqueue_for(pool, redis, prefix, f"a-{prefix}", BACKLOG)
    start_worker(fair)
    await wait_delivered(pool, backlog, 300)

    # When tenant B sends a few at the same priority
    small = await enqueue_for(pool, redis, prefix, f"b-{prefix}", SMALL)
    streamed_at = await pool.fetchval("SELECT clock_timestamp()")  # all of B's are in Redis
    await wait_delivered(pool, small, SMALL)

    # Then all of B's were claimed within two fetch rounds of A's (the round in progress, and
    # A's share of the next), while most of A's backlog was still waiting
    last_b_claim = await pool.fetchval(
        "SELECT max(at) FROM audit WHERE notification_id = ANY($1::uuid[])"
        " AND status = 'delivering'",
        small,
    )
    a_claimed_meanwhile = await pool.fetchval(
        "SELECT count(*) FROM audit WHERE notification_id = ANY($1::uuid[])"
        " AND status = 'delivering' AND at > $2 AND at < $3",
        backlog,
        streamed_at,
        last_b_claim,
    )
    a_claimed_before = await pool.fetchval(
        "SELECT count(DISTINCT notification_id) FROM audit WHERE"
        " notification_id = ANY($1::uuid[]) AND status = 'delivering' AND at <= $2",
        backlog,
        last_b_claim,
    )
    a_waiting = BACKLOG - a_claimed_before
    print(f"\nB's {SMALL} claimed after {a_claimed_meanwhile} of A's; {a_waiting} of A's waiting")
    assert a_claimed_meanwhile <= 2 * fair.worker_batch_size
    assert a_waiting > BACKLOG // 2  # B did not wait for A's backlog
    await wait_delivered(pool, backlog, BACKLOG)  # and A's backlog is delivered in full


async def test_an_entry_a_dead_worker_left_in_a_sub_stream_comes_back_after_the_lease(
    settings: Settings, start_worker: WorkerFactory, pool: asyncpg.Pool, redis: Redis
) -> None:
    fair = msgspec.structs.replace(
        settings, tenant_fairness=True, worker_lease_ms=500, log_level="WARNING"
    )
    keys = QueueKeys(settings.key_prefix)
    # Given a tenant's notification read from its sub-stream by a worker that then died
    [lost] = await enqueue_for(pool, redis, settings.key_prefix, f"a-{keys.prefix}", 1)
    streams = TenantStreams(redis, keys)
    active = await streams.active()
    Consumer(redis, keys, "crashed-worker", [])  # reads replies as the workers do
    entries, _ = await streams.read("crashed-worker", dict.fromkeys(streams.streams_of(active), 5))
    assert [entry.job_id for entry in entries] == [lost]

    # When a fair worker with a 500 ms lease runs
    start_worker(fair)

    # Then it takes the entry back from the sub-stream and delivers it
    await wait_delivered(pool, [lost], 1)


async def test_a_sigkilled_workers_entry_in_a_tenants_lane_is_reclaimed_and_delivered(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    pool: asyncpg.Pool,
    redis: Redis,
    stalling_smtp: tuple[Controller, StallingHandler],
) -> None:
    # Given a notification accepted with the default settings (into its tenant's lane), and a
    # `pulse worker` process stuck in its delivery, SIGKILLed there
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    notification_id = msgspec.json.decode(await response.read())["id"]
    keys = QueueKeys(settings.key_prefix)
    tenant_id = await pool.fetchval(
        "SELECT tenant_id::text FROM notifications WHERE id = $1", notification_id
    )
    env = worker_env(settings, stalling_smtp[0].port) | {"PULSE_WORKER_LEASE_MS": "1000"}
    killed = subprocess.Popen(
        [sys.executable, "-m", "pulse", "worker"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for_claim(pool, notification_id)
        os.kill(killed.pid, signal.SIGKILL)
        await asyncio.to_thread(killed.wait, 30)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert (await placed(redis, keys))[notification_id][1] == keys.tenant_stream(1, tenant_id)
    assert (await QueueStats(redis, keys).snapshot()).streams[1].pending == 1

    # When a worker with a working mail server runs
    with ScriptedSmtp(ScriptedHandler()) as smtp:
        start_worker(
            msgspec.structs.replace(
                settings, smtp_port=smtp.port, worker_lease_ms=1000, worker_reclaim_interval_ms=50
            )
        )

        # Then it takes the entry back from the tenant's lane and delivers it, once
        document = await wait_for_status(
            client, auth, f"/api/notifications/{notification_id}", "delivered", "failed"
        )
        assert document["status"] == "delivered"
        assert smtp.handler.accepted[f"<{notification_id}@pulse>"] == 1
    assert await placed(redis, keys) == {}
