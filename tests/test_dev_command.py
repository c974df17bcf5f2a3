"""`pulse dev` as a user runs it: no Redis or PostgreSQL given, the printed curl, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import pytest

from pulse.devtools.smtp_sink import free_port

pytestmark = pytest.mark.system


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the dev data folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


async def read_until_curl(stream: asyncio.StreamReader) -> tuple[str, list[str]]:
    seen: list[str] = []
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"pulse dev ended before printing a curl: {seen}")
        seen.append(line)
        if line.startswith("curl "):
            return line.strip(), seen


async def test_pulse_dev_runs_everything_and_stops_clean(tmp_path: Path) -> None:
    # Given no Redis, PostgreSQL or SMTP server configured
    data_dir = tmp_path / ".pulse"  # the default, relative to where it runs
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_HTTP_PORT=str(port))
    stderr_log = (tmp_path / "stderr.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pulse", "dev",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr_log,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        # When it prints its curl and we run that curl
        curl, banner = await asyncio.wait_for(read_until_curl(process.stdout), 120)
        key = next(line.split(": ", 1)[1].strip() for line in banner if "API key" in line)
        result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert " 202 " in result.stdout.splitlines()[0], result.stdout
        accepted = msgspec.json.decode(result.stdout.strip().splitlines()[-1])

        # Then the notification ends delivered
        document = await wait_delivered(port, key, accepted["id"])
        assert document["status"] == "delivered"
        history = document["history"]
        assert isinstance(history, list)
        assert [h["status"] for h in history] == ["queued", "delivering", "delivered"]
    finally:
        # And stopping it leaves no server process behind
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 60)
            assert code == 0
        stderr_log.close()
    log = (tmp_path / "stderr.log").read_text()
    assert "received mail from" in log  # the SMTP sink shows what was sent
    assert processes_mentioning(str(data_dir)) == []


async def wait_delivered(port: int, key: str, notification_id: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/api/notifications/{notification_id}"
    headers = {"Authorization": f"Bearer {key}"}
    document: dict[str, object] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            async with session.get(url, headers=headers) as response:
                document = msgspec.json.decode(await response.read())
            if document.get("status") in ("delivered", "failed"):
                return document
            await asyncio.sleep(0.1)
    raise AssertionError(f"never delivered: {document}")
