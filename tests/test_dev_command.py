"""`pulse dev` as a user runs it: no Redis or PostgreSQL given, the printed curl, a clean stop,
also when its terminal is closed."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
from pathlib import Path

import aiohttp
import msgspec
import pytest

from pulse.devtools.ports import free_port

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
        # And the README's own curl works once the printed export line is pasted
        exports = [line.strip() for line in banner if line.startswith("export PULSE_KEY=")]
        assert exports == [f"export PULSE_KEY={key}"], banner
        export = exports[0]
        readme = readme_snippet("## Send a notification", "sh").replace(
            "127.0.0.1:8000", f"127.0.0.1:{port}"
        )
        pasted = subprocess.run(
            ["bash", "-c", f"{export}\n{readme}"], capture_output=True, text=True, timeout=60
        )
        assert " 202 " in pasted.stdout.splitlines()[0], pasted.stdout

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


def readme_snippet(section: str, language: str) -> str:
    """The first ```language block after the heading ``section`` of README.md."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = text[text.index(section + "\n") :]
    start = after.index(f"```{language}\n") + len(f"```{language}\n")
    return after[start : after.index("```", start)]


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


def on_a_terminal(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], int]:
    """`pulse dev` as a shell would start it: its own session, a pseudo-terminal as its
    controlling terminal; returns the process and the terminal's master side."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_HTTP_PORT=str(port))

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "pulse", "dev"], cwd=tmp_path, env=env,
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(slave)
    return process, master


def read_terminal_until(master: int, text: bytes) -> bytes:
    seen = b""
    while text not in seen:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other side closed: pulse dev ended
            chunk = b""
        if not chunk:
            raise AssertionError(f"pulse dev ended before printing {text!r}: {seen!r}")
        seen += chunk
    return seen


async def test_closing_the_terminal_stops_every_server(tmp_path: Path) -> None:
    # Given `pulse dev` running on a terminal, with its embedded servers up
    process, master = on_a_terminal(tmp_path, free_port("127.0.0.1"))
    data_dir = tmp_path / ".pulse"
    try:
        shown = await asyncio.wait_for(
            asyncio.to_thread(read_terminal_until, master, b"curl "), 120
        )
        assert processes_mentioning(str(data_dir)), shown  # PostgreSQL and Valkey run
    finally:
        # When the terminal is closed (the kernel sends SIGHUP, as when a window is closed)
        os.close(master)
    code = await asyncio.to_thread(process.wait, 60)

    # Then pulse dev ends and leaves no server behind, as after Ctrl-C
    assert code == 0
    leftovers = processes_mentioning(str(data_dir))
    for line in leftovers:  # never leave them running on the machine, even when failing
        os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert leftovers == []
