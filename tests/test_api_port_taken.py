"""A port another `pulse api` serves is refused, not shared: SO_REUSEPORT is only for the
processes of one ``--processes N`` supervisor, else the kernel would split one deployment's
connections with another's."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pulse.config import Settings
from pulse.devtools.ports import free_port
from tests.conftest import pulse_api_exit, wait_http_ok

pytestmark = pytest.mark.system


def api_env(settings: Settings, port: int, processes: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_HTTP_PORT=str(port),
        PULSE_API_PROCESSES=str(processes),
    )
    return env


@pytest.fixture
async def serving(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """A running `pulse api` (``request.param`` processes); yields its environment."""
    env = api_env(settings, free_port("127.0.0.1"), request.param)
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen([sys.executable, "-m", "pulse", "api"], env=env, stderr=log)
    try:
        await wait_http_ok(f"http://127.0.0.1:{env['PULSE_HTTP_PORT']}/healthz")
        yield env
    finally:
        first.terminate()
        await asyncio.to_thread(first.wait, 60)


def assert_refused(second: subprocess.CompletedProcess[str], port: str) -> None:
    assert second.returncode != 0
    assert "address in use" in second.stderr
    assert port in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.parametrize("serving", [1], indirect=True)
async def test_a_second_api_on_a_taken_port_fails_naming_it(
    serving: dict[str, str], tmp_path: Path
) -> None:
    # Given one `pulse api` serving the port; when another one starts on it
    second = await asyncio.to_thread(pulse_api_exit, serving, tmp_path)
    # Then it stops at start-up, saying which port is taken
    assert_refused(second, serving["PULSE_HTTP_PORT"])


@pytest.mark.parametrize("serving", [2], indirect=True)
async def test_a_second_supervisor_or_api_on_a_supervised_port_fails(
    serving: dict[str, str], tmp_path: Path
) -> None:
    # Given `pulse api --processes 2` serving the port
    port = serving["PULSE_HTTP_PORT"]
    # When a second supervisor starts on it, then it stops at start-up, naming the port
    second = await asyncio.to_thread(pulse_api_exit, serving, tmp_path)
    assert_refused(second, port)
    # And so does a lone `pulse api` on that port
    lone = await asyncio.to_thread(pulse_api_exit, serving | {"PULSE_API_PROCESSES": "1"}, tmp_path)
    assert_refused(lone, port)
    # While the first deployment still answers
    await wait_http_ok(f"http://127.0.0.1:{port}/healthz")


async def test_a_supervisor_refuses_a_port_another_program_shares(
    settings: Settings, tmp_path: Path
) -> None:
    # Given some other program listening on the port with SO_REUSEPORT (which a supervisor's
    # children would otherwise join)
    port = free_port("127.0.0.1")
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        # When `pulse api --processes 2` starts on it, then it stops at start-up, naming it
        refused = await asyncio.to_thread(pulse_api_exit, api_env(settings, port, 2), tmp_path)
    assert_refused(refused, str(port))
