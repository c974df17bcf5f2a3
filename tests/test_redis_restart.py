"""The API rides out a Redis restart: the first request afterwards is served, not a 503 from a
pooled connection the old server closed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.http.app import create_app
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.integration


class PrivateRedis:
    """A redis-server of the test's own on a loopback port that stays the same across a
    restart, as a deployment's would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port("127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            for _ in range(300):
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise AssertionError("the private redis-server never answered")
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(30)
            self._process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_first_post_after_a_redis_restart_is_accepted(
    settings: Settings,
    private_redis: PrivateRedis,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    tenant: Any,
) -> None:
    own = msgspec.structs.replace(settings, redis_url=private_redis.url)
    async with TestClient(TestServer(create_app(own, channel_specs(own)))) as client:
        before = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        assert before.status == 202
        private_redis.stop()
        private_redis.start()
        after = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        body = await after.text()

    assert after.status == 202, body
    statuses = await pool.fetch(
        "SELECT status FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    assert [row["status"] for row in statuses] == ["queued", "queued"]
