"""Shared fixtures: real Redis, real PostgreSQL, a real SMTP server.

Servers: the ones named by PULSE_TEST_REDIS_URL / PULSE_TEST_DATABASE_URL, else embedded ones
started for this run. Either way each run gets a fresh database and a random key prefix, and
removes both at the end, so a shared server is never disturbed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import build_channels, channel_specs, plugins
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.devtools.smtp_sink import SmtpSink
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.runtime.worker import Worker, build_worker
from pulse.store.migrations import migrate_database
from pulse.store.pool import create_pool
from pulse.store.tenants import NewTenant, TenantStore
from tests.provider_fakes import google, twilio  # noqa: F401  (fixtures, shared)
from tests.tiers import refuse_untiered

Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).resolve().parent.parent
# `make setup` installs the example channel plugin (tests/plugins/) here, beside .venv.
TEST_PLUGINS = ROOT / ".test-plugins"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before `-m` selects a tier: every collected test must have exactly one."""
    refuse_untiered(items)


@dataclass(frozen=True)
class ServerUrls:
    redis: str
    postgres: str


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def server_urls() -> Iterator[ServerUrls]:
    redis_url = os.environ.get("PULSE_TEST_REDIS_URL")
    database_url = os.environ.get("PULSE_TEST_DATABASE_URL")
    if redis_url and database_url:
        yield ServerUrls(redis_url, database_url)
        return
    from pulse.devtools.embedded import EmbeddedServers

    with tempfile.TemporaryDirectory(prefix="pulse-test-") as workdir:
        os.chmod(workdir, 0o755)
        with EmbeddedServers(Path(workdir)) as servers:
            yield ServerUrls(redis_url or servers.redis_url, database_url or servers.database_url)


@asynccontextmanager
async def fresh_database(server: str, prefix: str, migrated: bool = True) -> AsyncIterator[str]:
    """A database of its own on ``server``, migrated unless told not to, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        if migrated:
            await migrate_database(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(server_urls: ServerUrls) -> AsyncIterator[str]:
    """A fresh, migrated database for this run, dropped afterwards."""
    async with fresh_database(server_urls.postgres, "pulse_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(server_urls: ServerUrls) -> str:
    return server_urls.redis


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def settings(
    database_url: str, redis_url: str, smtp_sink: SmtpSink
) -> AsyncIterator[Settings]:
    """Settings with a key prefix of its own per test; the test's keys are deleted afterwards."""
    prefix = f"pt{secrets.token_hex(4)}"
    yield Settings(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=prefix,
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_tls="none",
        smtp_timeout_s=5,
        worker_block_ms=100,
        worker_grace_s=5,
        # Tests share one database; a reconciler would adopt other tests' leftovers.
        reconcile_interval_s=3600,
        routes_refresh_s=0.2,
        receipt_signing_key="test-receipt-signing-key-" + "k" * 16,
    )
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=QueueKeys(prefix).tag + "*")]
        keys += [key async for key in redis.scan_iter(match="{" + prefix + "#*")]  # partitions
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def pulse_api_exit(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``pulse api`` run with ``env`` only, where it is expected to stop at start-up."""
    return subprocess.run(
        [sys.executable, "-m", "pulse", "api"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def keys(settings: Settings) -> QueueKeys:
    """The test's own Redis keys (removed with its settings' prefix afterwards)."""
    return QueueKeys(settings.key_prefix)


def log_job(priority: int = 2) -> Job:
    """A notification on the log channel, as the runtime carries it."""
    return Job(
        id=str(uuid7()), tenant_id="t", kind=JobKind.NOTIFICATION, channel="log",
        recipient="ops", payload={"message": "hi"}, priority=priority, max_attempts=3,
    )  # fmt: skip


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, 1, 4)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> NewTenant:
    return await TenantStore(pool).create(f"tenant-{secrets.token_hex(4)}")


@pytest.fixture
def auth(tenant: NewTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


class RunningWorker:
    def __init__(self, worker: Worker, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.worker = worker
        self.task = task
        self.stop = stop

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


WorkerFactory = Callable[[Settings], RunningWorker]


@pytest.fixture
async def start_worker(redis: Redis, pool: asyncpg.Pool) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers with the given settings; all are shut down after the test."""
    started: list[RunningWorker] = []

    def start(settings: Settings) -> RunningWorker:
        stop = asyncio.Event()
        channels = build_channels(settings, quiet_log=True)
        instance = build_worker(settings, redis, pool, channels, Metrics())
        running = RunningWorker(instance, asyncio.create_task(instance.run(stop)), stop)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.shutdown()


@pytest.fixture
async def worker(settings: Settings, start_worker: WorkerFactory) -> RunningWorker:
    return start_worker(settings)


EXAMPLE = {
    "recipient": "someone@example.com",
    "channel": "email",
    "payload": {"subject": "Hello", "body": "Welcome to Pulse"},
    "priority": 1,
}


async def wait_for_status(
    client: Client, headers: dict[str, str], location: str, *statuses: str
) -> dict[str, object]:
    """Poll GET until the notification reaches one of ``statuses``; give up after a minute."""
    document: dict[str, object] = {}
    for _ in range(1200):
        response = await client.get(location, headers=headers)
        document = msgspec.json.decode(await response.read())
        if document.get("status") in statuses:
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"{location} never reached {statuses}: {document}")


@pytest.fixture
async def live_api(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """A real `pulse api` process on this test's servers and key prefix; yields its base URL."""

    from pulse.devtools.ports import free_port

    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_HTTP_PORT=str(port),
        PULSE_LOG_LEVEL="WARNING",
        PULSE_RECEIPT_SIGNING_KEY=settings.receipt_signing_key or "",
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "pulse", "api"], env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http_ok(f"{base}/healthz")
        yield base
    finally:
        api.terminate()
        api.wait(30)
    assert "unhandled error" not in log_path.read_text()


async def wait_http_ok(url: str) -> None:
    """Poll ``url`` until it answers 200 (a server process starting up); give up after 30 s."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example channel plugin installed for this test: its folder on the import path (so
    its ``pulse.channels`` entry point is found) and the registry's plugin list reloaded."""
    if not (TEST_PLUGINS / ".installed").exists():
        pytest.fail("the example plugin is not installed: run `make setup`")
    monkeypatch.syspath_prepend(str(TEST_PLUGINS))
    plugins.cache_clear()
    yield TEST_PLUGINS
    plugins.cache_clear()
