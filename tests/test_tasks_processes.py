"""Task workers as real processes: `pulse worker --tasks` start-up, and a SIGKILLed worker's task
run again by another worker after the lease (at least once)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.metrics import Metrics
from pulse.runtime.worker import build_worker
from tests import tasks_example
from tests.conftest import ROOT, Client

pytestmark = pytest.mark.system


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_WORKER_BLOCK_MS="100",
        PULSE_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def test_a_task_module_that_cannot_be_imported_stops_start_up_naming_it(
    settings: Settings,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulse", "worker", "--tasks", "tests.tasks_example,no_such.tasks"],
        env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no_such.tasks" in done.stderr
    assert "could not be imported" in done.stderr


async def _registered_by(pool: asyncpg.Pool, worker: str) -> None:
    for _ in range(300):
        if await pool.fetchval("SELECT 1 FROM task_registry WHERE worker = $1 LIMIT 1", worker):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"worker {worker} never published its tasks")


def _read_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def _lines(path: Path, count: int) -> list[str]:
    for _ in range(600):
        if len(lines := _read_lines(path)) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never had {count} lines")


async def test_a_sigkilled_workers_task_runs_again_after_the_lease(
    client: Client, auth: dict[str, str], settings: Settings, pool: asyncpg.Pool, redis: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Given a `pulse worker --tasks` process running a task (lease 1 s)
    name = f"doomed-{settings.key_prefix}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pulse", "worker", "--tasks", "tests.tasks_example",
         "--no-channels"],
        env=worker_env(settings, PULSE_WORKER_CONSUMER=name, PULSE_WORKER_LEASE_MS="1000"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _registered_by(pool, name)
        marker = tmp_path / "starts"
        body = {"task": "example.sleeper", "args": {"seconds": 2, "marker": str(marker)}}
        response = await client.post("/api/jobs/", json=body, headers=auth)
        assert response.status == 202
        job_id = (await response.json())["id"]
        assert await _lines(marker, 1) == ["1"]
        # When the worker is SIGKILLed mid-run
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    # Then another worker runs it again after the lease, as attempt 2, and it succeeds
    chosen = msgspec.structs.replace(settings, worker_lease_ms=1000)
    stop = asyncio.Event()
    rescuer = build_worker(
        chosen, redis, pool, {}, Metrics(), [tasks_example.tasks], serve_channels=False
    )
    running = asyncio.create_task(rescuer.run(stop))
    try:
        job: dict[str, Any] = await (
            await client.get(f"/api/jobs/{job_id}?wait=30", headers=auth)
        ).json()
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert job["status"] == "succeeded"
    assert job["result"] == 2
    assert _read_lines(marker) == ["1", "2"]
