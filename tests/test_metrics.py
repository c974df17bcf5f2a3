"""/metrics as an operator reads it: flow by channel and priority (batch items included),
latencies, the queue's state from Redis, live workers; promtool finds nothing to complain of."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.stats import QueueStats
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.prometheus_tools import promtool
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels; 0 when absent (as Prometheus would sum)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


@pytest.fixture
def fast(settings: Settings, smtp: ScriptedSmtp) -> Settings:
    return msgspec.structs.replace(
        settings,
        smtp_port=smtp.port,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        worker_reclaim_interval_ms=50,
    )


async def test_single_and_batch_items_are_counted_as_accepted(
    client: Client, auth: dict[str, str]
) -> None:
    # Given one notification of priority 1 and a batch of three of priority 3 (one invalid)
    await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    items = [EXAMPLE | {"priority": 3}] * 2 + [EXAMPLE | {"recipient": "not an address"}]
    batch = await client.post("/api/notifications/batch", json={"items": items}, headers=auth)
    assert batch.status == 202

    # When the API is scraped
    text = await scrape(client)

    # Then every accepted item counts, by its channel and priority; the invalid one does not
    accepted = "pulse_notifications_accepted_total"
    assert value(text, accepted, channel="email", priority="1") == 1
    assert value(text, accepted, channel="email", priority="3") == 2
    assert "_created" not in text


async def test_delivered_retried_dead_lettered_replayed_and_cancelled_are_counted(
    client: Client, auth: dict[str, str], fast: Settings, start_worker: WorkerFactory
) -> None:
    # Given one cancelled before any worker runs, then one delivered at once, one after a 451,
    # and one refused for good (550) and replayed from the dead letters
    cancelled = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    await client.post(cancelled.headers["Location"] + "/cancel", headers=auth)
    running = start_worker(fast)
    locations = []
    for recipient in ("ann@example.com", "flaky1-bob@example.com", "reject-cy@example.com"):
        body = EXAMPLE | {"recipient": recipient}
        response = await client.post("/api/notifications/", json=body, headers=auth)
        locations.append(response.headers["Location"])
    for location, status in zip(locations, ("delivered", "delivered", "failed"), strict=True):
        assert (await wait_for_status(client, auth, location, status))["status"] == status
    worker = await _settled(running.worker.metrics, finished=3)  # counted after the commit
    dead = (await (await client.get("/api/dead-letters", headers=auth)).json())["items"]
    replay = await client.post(f"/api/dead-letters/{dead[0]['id']}/replay", headers=auth)
    assert replay.status == 202

    # When the API is scraped too
    api = await scrape(client)

    # Then each count is by channel and priority, in the process that saw it happen
    flow = {"channel": "email", "priority": "1"}
    assert value(api, "pulse_notifications_cancelled_total", **flow) == 1
    assert value(api, "pulse_notifications_replayed_total", **flow) == 1
    assert value(worker, "pulse_notifications_delivered_total", **flow) == 2
    assert value(worker, "pulse_notifications_retried_total", **flow) == 1
    assert value(worker, "pulse_notifications_failed_total", **flow) == 1
    assert value(worker, "pulse_notifications_dead_lettered_total", **flow) == 1
    # And the latencies: accepted -> first attempt (3), -> delivered (2), each SMTP call (4)
    assert value(worker, "pulse_notification_wait_seconds_count", **flow) == 3
    assert value(worker, "pulse_notification_end_to_end_seconds_count", **flow) == 2
    assert value(worker, "pulse_provider_call_duration_seconds_count", provider="smtp") == 4
    assert value(worker, "pulse_provider_circuit_state", provider="smtp") == 0


async def _settled(metrics: Metrics, finished: int) -> str:
    """The worker's exposition once ``finished`` notifications are counted delivered or failed
    (the acker counts right after its commit, which a reader may see first)."""
    text = ""
    for _ in range(200):
        text = metrics.exposition().decode()
        flow = {"channel": "email", "priority": "1"}
        counted = value(text, "pulse_notifications_delivered_total", **flow) + value(
            text, "pulse_notifications_failed_total", **flow
        )
        if counted >= finished:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"never counted {finished} finished notifications:\n{text}")


async def test_queue_state_and_live_workers_come_from_redis_at_scrape_time(
    client: Client,
    auth: dict[str, str],
    settings: Settings,
    start_worker: WorkerFactory,
    redis: Redis,
) -> None:
    # Given three notifications of priority 1 and no worker yet
    for _ in range(3):
        await client.post("/api/notifications/", json=EXAMPLE, headers=auth)

    # Then the API shows them waiting, and nobody consuming
    before = await scrape(client)
    assert value(before, "pulse_queue_stats_up") == 1
    assert value(before, "pulse_queue_depth", priority="1") == 3
    assert value(before, "pulse_queue_lag", priority="1") == 3
    assert value(before, "pulse_queue_pending", priority="1") == 0
    assert value(before, "pulse_queue_oldest_age_seconds", priority="1") >= 0
    assert value(before, "pulse_queue_depth", priority="4") == 0
    assert value(before, "pulse_workers_live") == 0

    # When a worker starts and delivers them
    running = start_worker(settings)
    after = await _scrape_until(client, "pulse_queue_depth", "0", priority="1")

    # Then the queue is empty and one worker is alive, consuming every stream
    assert value(after, "pulse_workers_live") == 1
    assert value(after, "pulse_queue_consumers", priority="1") == 1
    assert value(after, "pulse_dead_letters") == 0

    # And once it stops gracefully it no longer counts as alive (its consumer stays listed)
    await running.shutdown()
    gone = await QueueStats(redis, QueueKeys(settings.key_prefix)).snapshot()
    assert gone.workers == []
    assert gone.streams[1].consumers == 1


async def _scrape_until(client: Client, name: str, wanted: str, **labels: str) -> str:
    """Scrape (the queue's state is read at most once a second) until ``name`` reads
    ``wanted`` and a worker is alive; give up after a minute."""
    text = ""
    for _ in range(240):
        text = await scrape(client)
        if value(text, name, **labels) == float(wanted) and value(text, "pulse_workers_live"):
            return text
        await asyncio.sleep(0.25)
    raise AssertionError(f"{name}{labels} never read {wanted}:\n{text}")


async def test_an_unreachable_redis_leaves_the_scrape_answering_without_queue_gauges(
    settings: Settings,
) -> None:
    down = msgspec.structs.replace(
        settings, redis_url=f"redis://127.0.0.1:{free_port('127.0.0.1')}"
    )
    app = create_app(down, channel_specs(down), Metrics())

    async with TestClient(TestServer(app)) as client:
        text = await scrape(client)

    assert value(text, "pulse_queue_stats_up") == 0
    assert "pulse_queue_depth" not in text


async def test_promtool_finds_the_expositions_clean(
    client: Client, auth: dict[str, str], fast: Settings, start_worker: WorkerFactory
) -> None:
    running = start_worker(fast)
    location = (await client.post("/api/notifications/", json=EXAMPLE, headers=auth)).headers[
        "Location"
    ]
    await wait_for_status(client, auth, location, "delivered")

    for exposition in (await scrape(client), running.worker.metrics.exposition().decode()):
        result = promtool("check", "metrics", stdin=exposition.encode())
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == ""
        assert result.stderr.strip() == ""
