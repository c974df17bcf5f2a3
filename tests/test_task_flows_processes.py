"""Chains through a SIGKILLed `pulse worker --tasks` process: every child is released exactly
once (the release commits with its parent's end) and runs; only a child running at the kill
may run twice (tasks run at least once)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from tests import tasks_example, tasks_flows_example
from tests.conftest import ROOT, Client
from tests.test_task_flows import enqueue, finished
from tests.test_tasks_processes import _registered_by, worker_env

pytestmark = pytest.mark.system
CHAINS = 40


async def _done(pool: asyncpg.Pool, ids: list[str], count: int) -> None:
    for _ in range(600):
        ended = await pool.fetchval(
            "SELECT count(*) FROM notifications"
            " WHERE id = ANY($1::uuid[]) AND status = 'delivered'",
            ids,
        )
        if ended >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} jobs ever ended")


async def test_chains_survive_a_sigkilled_worker_released_once_each(
    client: Client, auth: dict[str, str], settings: Settings, pool: asyncpg.Pool, redis: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Given a worker process and chains of a parent and a child
    name = f"doomed-{settings.key_prefix}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pulse", "worker", "--no-channels",
         "--tasks", "tests.tasks_example,tests.tasks_flows_example"],
        env=worker_env(settings, PULSE_WORKER_CONSUMER=name, PULSE_WORKER_LEASE_MS="1000"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    order = tmp_path / "order"
    parents, children = [], []
    try:
        await _registered_by(pool, name)
        # paused while the chains are enqueued: a parent that ran before its child was enqueued
        # would have the child queued at accept, never released
        process.send_signal(signal.SIGSTOP)
        for n in range(CHAINS):
            parent = await enqueue(client, auth, "flows.step", path=str(order), name=f"p{n}")
            child = await enqueue(
                client, auth, "flows.step", after=[parent["id"]], path=str(order), name=f"c{n}"
            )
            parents.append(parent["id"])
            children.append(child["id"])
        process.send_signal(signal.SIGCONT)
        # When it is SIGKILLed once some parents have ended
        await _done(pool, parents, CHAINS // 4)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    # Then another worker finishes every chain
    chosen = msgspec.structs.replace(
        settings, worker_lease_ms=1000, reconcile_interval_s=0.5, reconcile_after_s=0.5
    )
    stop = asyncio.Event()
    registries = [tasks_example.tasks, tasks_flows_example.tasks]
    rescuer = build_worker(chosen, redis, pool, {}, Metrics(), registries, serve_channels=False)
    running = asyncio.create_task(rescuer.run(stop))
    try:
        documents = [await finished(client, auth, job_id) for job_id in children]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert {document["status"] for document in documents} == {"succeeded"}
    # each child released exactly once, after its parent, run once (twice only if cut short)
    released = await pool.fetch(
        "SELECT notification_id, count(*) AS n FROM audit"
        " WHERE notification_id = ANY($1::uuid[]) AND detail LIKE 'released:%'"
        " GROUP BY notification_id",
        children,
    )
    assert len(released) == CHAINS
    assert {row["n"] for row in released} == {1}
    lines = order.read_text().split()
    for n in range(CHAINS):
        assert 1 <= lines.count(f"c{n}") <= 2
        assert lines.index(f"p{n}") < lines.index(f"c{n}")
