"""``pulse api --processes N``: N real API processes on one port, a killed one replaced, all
stopped by one SIGTERM to the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, wait_http_ok

pytestmark = pytest.mark.system
PROCESSES = 2


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (from /proc: a child that
    exists may still be importing, its socket not yet listening)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


async def until(condition: str, check: object) -> None:
    """Wait for ``check()`` to hold (a process starting or stopping); give up after 30 s."""
    assert callable(check)
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {condition}")


@pytest.fixture
async def supervised(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_HTTP_PORT=str(port),
        PULSE_API_PROCESSES=str(PROCESSES),
    )
    with (tmp_path / "api.log").open("wb") as log:
        api = subprocess.Popen([sys.executable, "-m", "pulse", "api"], env=env, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http_ok(f"{base}/healthz")
        yield base, api
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(30)


async def accepted(base: str, tenant: NewTenant, times: int) -> list[int]:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    statuses = []
    for _ in range(times):  # a connection each: the kernel spreads them over the processes
        async with aiohttp.ClientSession() as session:
            url = f"{base}/api/notifications/"
            async with session.post(url, json=EXAMPLE, headers=headers) as response:
                statuses.append(response.status)
    return statuses


async def test_n_processes_answer_a_killed_one_is_replaced_and_sigterm_stops_all(
    supervised: tuple[str, subprocess.Popen[bytes]], tenant: NewTenant
) -> None:
    base, supervisor = supervised
    # Given `pulse api` with PULSE_API_PROCESSES=2
    await until("two API processes", lambda: len(children_of(supervisor.pid)) == PROCESSES)
    first = children_of(supervisor.pid)
    port = int(base.rsplit(":", 1)[1])
    await until("both listening", lambda: all(listening(pid, port) for pid in first))
    assert await accepted(base, tenant, 10) == [202] * 10

    # When one of them is killed
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    # Then once it is gone (connections queued on its socket go with it: SO_REUSEPORT), the
    # port keeps answering and a new process takes its place
    await until("the victim reaped", lambda: victim not in children_of(supervisor.pid))
    assert await accepted(base, tenant, 5) == [202] * 5
    await until(
        "a replacement",
        lambda: len(children_of(supervisor.pid) - {victim}) == PROCESSES,
    )
    survivors = children_of(supervisor.pid)
    assert victim not in survivors
    assert len(survivors & first) == 1
    await wait_http_ok(f"{base}/healthz")

    # When the supervisor gets SIGTERM, every process stops and it exits cleanly
    supervisor.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(supervisor.wait, 60)
    assert code == 0
    assert not (children_of(supervisor.pid) | survivors) & running()


def running() -> set[int]:
    return {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}


async def test_children_stop_when_the_supervisor_is_killed(
    supervised: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, supervisor = supervised
    await until("two API processes", lambda: len(children_of(supervisor.pid)) == PROCESSES)
    children = children_of(supervisor.pid)

    # When the supervisor is killed outright (no stop to pass on)
    supervisor.kill()
    await asyncio.to_thread(supervisor.wait, 60)

    # Then its API processes stop too instead of serving on, orphaned
    await until("the orphans stopped", lambda: not (children & alive()))


def alive() -> set[int]:
    """Running processes (a zombie, exited but not yet reaped, is not running)."""
    found = set()
    for pid in running():
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.add(pid)
    return found
