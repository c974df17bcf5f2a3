"""`pulse dev` shows the mail its SMTP sink received on /dev/mail: the README's curl, seen."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pulse.devtools.ports import free_port
from tests.conftest import ServerUrls, fresh_database
from tests.test_dev_command import read_until_curl

pytestmark = pytest.mark.system


async def mails(base: str) -> list[Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/dev/mail.json") as reply:
        assert reply.status == 200
        body = await reply.json()
        return list(body["mails"])


async def test_pulse_dev_lists_the_mail_it_sent(tmp_path: Path, server_urls: ServerUrls) -> None:
    port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    async with fresh_database(server_urls.postgres, "pulse_devmail", migrated=False) as db_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(
            PULSE_HTTP_PORT=str(port),
            PULSE_REDIS_URL=server_urls.redis,
            PULSE_DATABASE_URL=db_url,
            PULSE_KEY_PREFIX=f"devmail{secrets.token_hex(3)}",
            PULSE_DATA_DIR=str(tmp_path / ".pulse"),
        )
        log = (tmp_path / "stderr.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pulse", "dev",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        try:
            # Given `pulse dev` running, which names its dashboard and mail page
            assert process.stdout is not None
            curl, banner = await asyncio.wait_for(read_until_curl(process.stdout), 120)
            assert any(f"{base}/dashboard" in line and "/dev/mail" in line for line in banner)
            assert await mails(base) == []

            # When the printed curl is run
            result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=9)
            assert " 202 " in result.stdout.splitlines()[0], result.stdout

            # Then the mail the sink received is listed with its subject, recipient and time
            for _ in range(300):
                found = await mails(base)
                if found:
                    break
                await asyncio.sleep(0.1)
            [mail] = found
            assert (mail["to"], mail["subject"]) == (["someone@example.com"], "Hello")
            assert mail["received_at"]
            async with aiohttp.ClientSession() as session, session.get(f"{base}/dev/mail") as page:
                assert "someone@example.com" in await page.text()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(process.wait(), 60) == 0
            log.close()
