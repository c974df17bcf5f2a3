"""Chaos with tasks: 3,000 task jobs (one in ten deferred) while workers are SIGKILLed, Redis
restarts empty and PostgreSQL stops for 5 s; the same faults as ``test_chaos``. Loopback only,
bounded in time; it starts its own servers.

At the end every accepted job succeeded (its body ran to its end) or failed with its reason;
none is lost or stuck. A body that ran to its end twice is only allowed for a job a SIGKILLed
worker was running: at-least-once's one window (documented: tasks should be idempotent).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import asyncpg
import msgspec
import pytest

from pulse.devtools.ports import free_port
from pulse.store.migrations import migrate_database
from tests.chaos_lab import Lab, PulseProcess, running_lab
from tests.chaos_tasks_example import FAIL_EVERY
from tests.conftest import wait_http_ok
from tests.test_chaos import _faults, _tenant, connect_when_up, pulse_env

pytestmark = pytest.mark.system

TOTAL = 3_000
PACE_S = 0.08  # each lane's pause between jobs: ~200 jobs/s, so sending spans every fault
DEFER_EVERY = 10  # one job in ten is deferred by 1-3 s (through the due-time index)
CONCURRENCY = 16
DEADLINE_S = 300


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    with running_lab("pulse-chaos-tasks-") as lab:
        yield lab


class TaskSubmitter:
    """A client as ``pulse.client`` is: an Idempotency-Key per job, reused on each retry;
    503s and connection errors are retried, refusals counted."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}"}
        self.accepted: dict[str, int] = {}  # job id -> its number
        self.retries = 0
        self.unavailable = 0
        self.refused: list[str] = []

    async def send_all(self, total: int) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(1, total + 1):
            queue.put_nowait(n)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._lane(session, queue) for _ in range(CONCURRENCY)))

    async def _lane(self, session: aiohttp.ClientSession, queue: asyncio.Queue[int]) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            body: dict[str, Any] = {"task": "chaos.work", "args": {"n": n}, "priority": n % 5}
            if n % DEFER_EVERY == 0:
                body["delay_s"] = 1 + n % 3
            headers = {**self.headers, "Idempotency-Key": str(uuid4())}
            while not await self._send(session, n, body, headers):
                self.retries += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(PACE_S)

    async def _send(
        self, session: aiohttp.ClientSession, n: int, body: dict[str, Any], headers: dict[str, str]
    ) -> bool:
        try:
            async with session.post(f"{self.base}/api/jobs/", json=body, headers=headers) as r:
                text = await r.text()
                if r.status == 202:
                    self.accepted[msgspec.json.decode(text)["id"]] = n
                    return True
                if r.status in (409, 422):
                    self.refused.append(f"#{n}: {r.status} {text}")
                    if r.status == 409:
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    return r.status == 422
                assert r.status == 503, text  # an outage is a 503, never a 500
                self.unavailable += 1
                return False
        except (aiohttp.ClientError, TimeoutError):
            return False


async def _registered(url: str) -> None:
    conn = await connect_when_up(url)
    try:
        for _ in range(600):
            if await conn.fetchval("SELECT 1 FROM task_registry WHERE name = 'chaos.work'"):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError("no worker published chaos.work")


async def _wait_settled(url: str, ids: list[str]) -> float:
    started = time.monotonic()
    conn = await connect_when_up(url)
    try:
        while time.monotonic() - started < DEADLINE_S:
            open_count = await conn.fetchval(
                "SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[])"
                " AND status NOT IN ('delivered', 'failed')",
                ids,
            )
            if open_count == 0:
                return round(time.monotonic() - started, 1)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    return -1.0


async def test_chaos_with_tasks_nothing_lost_nothing_stuck(lab: Lab, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.touch()
    await migrate_database(lab.postgres.url)
    conn = await asyncpg.connect(lab.postgres.url)
    tenant = await _tenant(conn, lab.postgres.url)
    await conn.close()
    env = pulse_env(lab, free_port("127.0.0.1")) | {
        "PULSE_TASKS": "tests.chaos_tasks_example",
        "CHAOS_TASK_MARKS": str(marks),
    }
    api = PulseProcess("api", env, tmp_path / "api.log")
    workers = [PulseProcess("worker", env, tmp_path / f"w{n}.log") for n in range(2)]
    for process in (api, *workers):
        process.start()
    await wait_http_ok(f"http://127.0.0.1:{lab.http_port}/readyz")
    await _registered(lab.postgres.url)
    submitter = TaskSubmitter(f"http://127.0.0.1:{lab.http_port}", tenant)
    started = time.monotonic()
    sending = asyncio.create_task(submitter.send_all(TOTAL))
    try:
        figures = await _faults(lab, workers)
        await asyncio.wait_for(sending, DEADLINE_S)
        figures["settle_s"] = await _wait_settled(lab.postgres.url, list(submitter.accepted))
    finally:
        sending.cancel()
        for process in (api, *workers):
            process.stop()
    figures["total_s"] = round(time.monotonic() - started, 1)
    killed = {name for process in workers for name in process.names[:-1]}
    await _verify(lab.postgres.url, submitter, Counter(marks.read_text().split()), killed, figures)


async def _verify(
    url: str, submitter: TaskSubmitter, ran: Counter[str], killed: set[str],
    figures: dict[str, Any],
) -> None:  # fmt: skip
    ids = list(submitter.accepted)
    conn = await connect_when_up(url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, status, last_error FROM notifications WHERE id = ANY($1::uuid[])",
            ids,
        )
        audits = await conn.fetch(
            "SELECT notification_id::text AS id, array_agg(status ORDER BY id) AS statuses,"
            " array_agg(status || ':' || coalesce(detail, '') || '@' || at::text ORDER BY id)"
            " AS details,"
            " array_agg(worker ORDER BY id) AS workers"
            " FROM audit WHERE notification_id = ANY($1::uuid[]) GROUP BY notification_id",
            ids,
        )
        created = await conn.fetchval("SELECT count(*) FROM notifications")
    finally:
        await conn.close()
    status = {row["id"]: row for row in rows}
    history = {row["id"]: row for row in audits}
    succeeded = [i for i, row in status.items() if row["status"] == "delivered"]
    failed = [i for i, row in status.items() if row["status"] == "failed"]
    stuck = [i for i, row in status.items() if row["status"] not in ("delivered", "failed")]
    lost = [i for i in ids if i not in status] + [i for i in succeeded if ran[i] == 0]
    duplicates = [i for i in succeeded if ran[i] > 1]
    figures.update(
        sent=len(ids), client_retries=submitter.retries, answered_503=submitter.unavailable,
        refused=len(submitter.refused), created=created, succeeded=len(succeeded),
        failed=len(failed), duplicates=len(duplicates), kills=len(killed), lost=len(lost),
        stuck=len(stuck),
    )  # fmt: skip
    print(f"\nchaos (tasks) figures: {figures}")
    for job_id in duplicates[:5]:
        print("DUP", job_id, ran[job_id], list(history[job_id]["details"]))
        print("   ", list(history[job_id]["workers"]))

    assert not submitter.refused, submitter.refused[:10]
    assert len(ids) == TOTAL
    assert created == TOTAL  # no retry created a second job
    assert submitter.unavailable > 0  # the outages were seen as 503s, and retried
    assert lost == []
    assert stuck == []
    assert {submitter.accepted[i] % FAIL_EVERY for i in failed} <= {0}  # only the refused ones
    assert all(status[i]["last_error"] for i in failed)  # failed with its reason
    assert len(failed) == TOTAL // FAIL_EVERY
    for job_id, row in history.items():  # complete histories
        statuses = list(row["statuses"])
        assert statuses[0] in ("queued", "scheduled"), statuses
        assert statuses[-1] == status[job_id]["status"], statuses
    for job_id in duplicates:  # each run twice because a SIGKILLed worker was running it
        assert set(history[job_id]["workers"]) & killed, (job_id, list(history[job_id]["workers"]))
