"""`pulse worker --tasks` as a real process serves a cpu_bound task from its process pool
(spawned children must not run the CLI again)."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from pulse.config import Settings
from tests.conftest import ROOT, Client
from tests.test_task_flows import enqueue, finished
from tests.test_tasks_processes import _registered_by, worker_env

pytestmark = pytest.mark.system


async def test_a_worker_process_runs_a_cpu_bound_task(
    client: Client, auth: dict[str, str], settings: Settings, pool: asyncpg.Pool
) -> None:
    name = f"cpu-{settings.key_prefix}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pulse", "worker", "--no-channels",
         "--tasks", "tests.tasks_cpu_example"],
        env=worker_env(settings, PULSE_WORKER_CONSUMER=name, PULSE_TASK_PROCESSES="1"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        await _registered_by(pool, name)
        job = await finished(client, auth, (await enqueue(client, auth, "cpu.square", n=7))["id"])
        assert job["status"] == "succeeded"
        assert job["result"]["square"] == 49
        assert job["result"]["pid"] != process.pid
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors[-2000:]
