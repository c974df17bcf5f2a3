"""A worker SIGKILLed between reading and acknowledging loses nothing and claims nothing false."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
from tests.conftest import EXAMPLE, Client

pytestmark = pytest.mark.system


class StallingHandler:
    """Accepts the SMTP conversation but never answers DATA: the send is in flight for ever."""

    def __init__(self) -> None:
        self.completed = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(3600)
        self.completed += 1
        return "250 OK"


@pytest.fixture
def stalling_smtp() -> Iterator[tuple[Controller, StallingHandler]]:
    handler = StallingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port("127.0.0.1"))
    controller.start()
    yield controller, handler
    controller.stop()


def worker_env(settings: Settings, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_SMTP_HOST="127.0.0.1",
        PULSE_SMTP_PORT=str(smtp_port),
        PULSE_SMTP_TLS="none",
        PULSE_WORKER_BLOCK_MS="100",
    )
    return env


def start_worker(settings: Settings, smtp_port: int) -> subprocess.Popen[bytes]:
    """A real `pulse worker` process on this test's servers and key prefix."""
    return subprocess.Popen(
        [sys.executable, "-m", "pulse", "worker"],
        env=worker_env(settings, smtp_port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_before_ack_leaves_entry_pending_and_not_delivered(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    stalling_smtp: tuple[Controller, StallingHandler],
) -> None:
    # Given an accepted notification and a worker whose SMTP send never completes
    controller, handler = stalling_smtp
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    notification_id = msgspec.json.decode(await response.read())["id"]
    worker = start_worker(settings, controller.port)
    try:
        # When the worker has read and claimed it, and is killed mid-send
        await wait_for_claim(pool, notification_id)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()

    # Then its stream entry is still pending in the consumer group
    assert await pending(redis, settings) == 1
    # And nothing claims it was delivered: no mail completed, the status says so
    status = await pool.fetchval("SELECT status FROM notifications WHERE id = $1", notification_id)
    assert status == "delivering"
    assert handler.completed == 0
    audit = await pool.fetch(
        "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id", notification_id
    )
    assert [row["status"] for row in audit] == ["queued", "delivering"]


async def pending(redis: Redis, settings: Settings) -> int:
    """Entries of EXAMPLE's priority read and not acknowledged, as the queue's stats show them."""
    snapshot = await QueueStats(redis, QueueKeys(settings.key_prefix)).snapshot()
    return snapshot.streams[int(EXAMPLE["priority"])].pending  # type: ignore[call-overload]


async def wait_for_claim(pool: asyncpg.Pool, notification_id: str) -> None:
    for _ in range(600):
        status = await pool.fetchval(
            "SELECT status FROM notifications WHERE id = $1", notification_id
        )
        if status == "delivering":
            await asyncio.sleep(0.3)  # let the SMTP conversation reach DATA
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never claimed the notification")


class SlowHandler:
    """Answers DATA after a pause, so a delivery is in flight when SIGTERM arrives."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(1.0)
        content = bytes(envelope.content)
        for line in content.splitlines():
            if line.lower().startswith(b"message-id:"):
                self.message_ids.append(line.split(b":", 1)[1].strip().decode())
        return "250 OK"


async def test_sigterm_finishes_in_flight_delivery_and_exits_zero(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
) -> None:
    # Given a worker in the middle of a slow SMTP delivery
    handler = SlowHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port("127.0.0.1"))
    controller.start()
    try:
        response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        notification_id = msgspec.json.decode(await response.read())["id"]
        worker = start_worker(settings, controller.port)
        await wait_for_claim(pool, notification_id)

        # When it receives SIGTERM
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 60)
    finally:
        controller.stop()

    # Then it exits 0 after finishing the delivery, persisted and acknowledged
    assert code == 0
    assert handler.message_ids == [f"<{notification_id}@pulse>"]
    status = await pool.fetchval("SELECT status FROM notifications WHERE id = $1", notification_id)
    assert status == "delivered"
    assert await pending(redis, settings) == 0


async def test_second_sigterm_stops_at_once_leaving_work_pending(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    stalling_smtp: tuple[Controller, StallingHandler],
) -> None:
    # Given a worker whose delivery never completes (its grace period is 30 s)
    controller, _ = stalling_smtp
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    notification_id = msgspec.json.decode(await response.read())["id"]
    worker = start_worker(settings, controller.port)
    await wait_for_claim(pool, notification_id)

    # When it gets SIGTERM, then SIGTERM again
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 20)

    # Then it stopped without waiting out the grace period, and the entry is still pending
    assert code == 1  # a graceful stop would have waited for the delivery and exited 0
    assert await pending(redis, settings) == 1
    status = await pool.fetchval("SELECT status FROM notifications WHERE id = $1", notification_id)
    assert status == "delivering"
