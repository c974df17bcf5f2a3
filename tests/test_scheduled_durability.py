"""Scheduled sends survive what Redis and workers do: a Redis restarted empty before the due
time, and every worker SIGKILLed across it. Each notification reaches the SMTP server exactly
once, not before its due time, late by at most the outage (plus the reconciler's interval).

Real processes (``pulse api``, ``pulse worker``) against a Redis and PostgreSQL of the test's
own (tests/chaos_lab.py), loopback only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from pulse.devtools.smtp_sink import SmtpSink
from pulse.queue.keys import QueueKeys
from pulse.store.migrations import migrate_database
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore
from tests.chaos_lab import Lab, PulseProcess, running_lab
from tests.conftest import wait_http_ok

pytestmark = pytest.mark.system

COUNT = 60
DEADLINE_S = 90


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    with running_lab("pulse-sched-") as lab:
        yield lab


def pulse_env(lab: Lab, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=lab.redis.url,
        PULSE_DATABASE_URL=lab.postgres.url,
        PULSE_HTTP_PORT=str(lab.http_port),
        PULSE_SMTP_HOST="127.0.0.1",
        PULSE_SMTP_PORT=str(smtp_port),
        PULSE_SMTP_TLS="none",
        PULSE_WORKER_BLOCK_MS="200",
        PULSE_RECONCILE_INTERVAL_S="1",
        PULSE_RECONCILE_AFTER_S="1",
        PULSE_LOG_LEVEL="WARNING",
    )
    return env


class Setup:
    def __init__(self, lab: Lab, tmp_path: Path, sink: SmtpSink) -> None:
        self.lab = lab
        self.env = pulse_env(lab, sink.port)
        self.tmp_path = tmp_path
        self.base = f"http://127.0.0.1:{lab.http_port}"
        self.processes: list[PulseProcess] = []

    def start(self, command: str) -> PulseProcess:
        process = PulseProcess(
            command, self.env, self.tmp_path / f"{command}{len(self.processes)}.log"
        )
        process.start()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


async def tenant_key(url: str) -> str:
    await migrate_database(url)
    pool = await create_pool(url, 1, 1)
    try:
        return (await TenantStore(pool).create(f"sched-{secrets.token_hex(3)}")).api_key
    finally:
        await pool.close()


async def schedule_all(
    base: str, key: str, delay_s: float, spread_s: float = 0.0
) -> dict[str, str]:
    """``COUNT`` notifications due in ``delay_s`` (spread evenly over ``spread_s`` more):
    id -> recipient."""
    accepted: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        for n in range(COUNT):
            recipient = f"s{n}-{secrets.token_hex(2)}@example.com"
            body = {
                "recipient": recipient, "channel": "email", "priority": n % 5,
                "payload": {"subject": f"scheduled {n}", "body": "x"},
                "delay_s": delay_s + n * spread_s / COUNT,
            }  # fmt: skip
            async with session.post(f"{base}/api/notifications/", json=body, headers=headers) as r:
                answer: dict[str, Any] = await r.json()
                assert r.status == 202, answer
                assert answer["status"] == "scheduled"
                accepted[answer["id"]] = recipient
    return accepted


async def wait_delivered(url: str, ids: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    conn = await asyncpg.connect(url)
    try:
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT count(*) FROM notifications WHERE id = ANY($1) AND status = 'delivered'",
                ids,
            )
            if done == len(ids):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise AssertionError("scheduled notifications were not all delivered in time")


async def verify_exactly_once(
    url: str, accepted: dict[str, str], sink: SmtpSink, killed: frozenset[str] = frozenset()
) -> None:
    """Each received once by the SMTP server, none before its due time, delivered once in its
    history. A second mail is allowed only where a SIGKILLed worker held the notification
    (at-least-once delivery's one window: the relay accepted, the worker died before recording
    it)."""
    received = Counter(to for mail in sink.messages() for to in mail.rcpt_tos)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, send_at, delivered_at,"
            "       (SELECT count(*) FROM audit a WHERE a.notification_id = n.id"
            "         AND a.status = 'delivered') AS delivered,"
            "       (SELECT array_agg(DISTINCT a.worker) FROM audit a"
            "         WHERE a.notification_id = n.id AND a.worker IS NOT NULL) AS workers"
            "  FROM notifications n WHERE id = ANY($1)",
            list(accepted),
        )
    finally:
        await conn.close()
    assert len(rows) == len(accepted)
    for row in rows:
        send_at: datetime = row["send_at"]
        assert row["delivered_at"] >= send_at, row
        assert row["delivered"] == 1, row
        mails = received[accepted[row["id"]]]
        assert mails >= 1, row
        if mails > 1:
            assert set(row["workers"] or ()) & killed, row


async def test_scheduled_sends_survive_redis_restarted_empty(lab: Lab, tmp_path: Path) -> None:
    with SmtpSink() as sink:
        key = await tenant_key(lab.postgres.url)
        setup = Setup(lab, tmp_path, sink)
        try:
            setup.start("api")
            setup.start("worker")
            await wait_http_ok(f"{setup.base}/readyz")
            # Given notifications scheduled a few seconds ahead
            accepted = await schedule_all(setup.base, key, delay_s=4)
            # When Redis restarts empty before they are due
            lab.restart_redis_empty()
            redis = Redis.from_url(lab.redis.url)
            try:
                # the due-time index is gone (the running API and worker may already have
                # written other keys: heartbeats, locks, consumer groups)
                keys = QueueKeys("pulse")
                due_index = [*keys.all_scheduled(), *keys.all_task_scheduled()]
                assert await redis.exists(*due_index, keys.scheduled_jobs()) == 0
            finally:
                await redis.aclose()
            # Then each is delivered once, not before its time
            await wait_delivered(lab.postgres.url, list(accepted))
        finally:
            setup.stop_all()
        await verify_exactly_once(lab.postgres.url, accepted, sink)


async def test_scheduled_sends_survive_every_worker_sigkilled_over_the_due_time(
    lab: Lab, tmp_path: Path
) -> None:
    with SmtpSink() as sink:
        key = await tenant_key(lab.postgres.url)
        setup = Setup(lab, tmp_path, sink)
        try:
            setup.start("api")
            workers = [setup.start("worker"), setup.start("worker")]
            await wait_http_ok(f"{setup.base}/readyz")
            # Given notifications due in 3 s, accepted while two workers run
            accepted = await schedule_all(setup.base, key, delay_s=3)
            # When every worker is SIGKILLed and none runs over the due time
            for worker in workers:
                worker.kill()
            await asyncio.sleep(4)
            assert len(sink.messages()) == 0
            # Then a worker started later delivers each once
            setup.start("worker")
            await wait_delivered(lab.postgres.url, list(accepted))
        finally:
            setup.stop_all()
        await verify_exactly_once(lab.postgres.url, accepted, sink)


async def test_scheduled_sends_survive_a_worker_sigkilled_while_they_fall_due(
    lab: Lab, tmp_path: Path
) -> None:
    with SmtpSink() as sink:
        key = await tenant_key(lab.postgres.url)
        setup = Setup(lab, tmp_path, sink)
        setup.env["PULSE_WORKER_LEASE_MS"] = "3000"  # a dead worker's claims come back soon
        try:
            setup.start("api")
            workers = [setup.start("worker"), setup.start("worker")]
            await wait_http_ok(f"{setup.base}/readyz")
            # Given notifications falling due one after another over 4 s, two workers running
            accepted = await schedule_all(setup.base, key, delay_s=2, spread_s=4)
            # When one worker is SIGKILLed halfway through
            await asyncio.sleep(4)
            killed = frozenset({workers[0].kill()})
            # Then the other delivers what is left, each once
            await wait_delivered(lab.postgres.url, list(accepted))
        finally:
            setup.stop_all()
        await verify_exactly_once(lab.postgres.url, accepted, sink, killed)
