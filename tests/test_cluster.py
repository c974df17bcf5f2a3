"""Partitioned streams on a real Redis Cluster (3 masters, 3 replicas on loopback).

The API runs in-process, workers as ``pulse worker`` processes (so one can be SIGKILLed), all on
a cluster of the test's own (``cluster_lab.py``) and a database of the test's own. The prefix is
chosen so the three partitions' tags hash to slots of three different masters: what is asserted
first. Every accepted notification is counted in PostgreSQL and at the SMTP sink.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.queue.client import open_redis
from pulse.queue.keys import QueueKeys
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore
from tests.chaos_lab import PulseProcess
from tests.cluster_lab import ClusterLab, running_cluster
from tests.conftest import Client, ServerUrls, fresh_database
from tests.queue_view import placed
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.system

PARTITIONS = 3
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterLab]:
    with running_cluster(masters=3, replicas=1) as lab:
        yield lab


def spread_prefix(lab: ClusterLab) -> str:
    """A fresh key prefix whose partitions' tags are served by as many masters as there are
    partitions (slots are assigned to masters in ranges, so a given prefix may not be)."""
    while True:
        prefix = f"pc{secrets.token_hex(3)}"
        keys = QueueKeys(prefix, partitions=PARTITIONS)
        masters = {lab.master_of(part.stream(2)) for part in keys.partition_keys()}
        if len(masters) == PARTITIONS:
            return prefix


@dataclass
class Deployment:
    """One Pulse on the cluster: its settings, API client, database, sink and workers."""

    settings: Settings
    lab: ClusterLab
    client: Client
    pool: asyncpg.Pool
    redis: Redis
    smtp: ScriptedSmtp
    auth: dict[str, str]
    workdir: Path
    workers: list[PulseProcess]
    failover: bool = False  # connection errors are then logged, with their tracebacks

    @property
    def keys(self) -> QueueKeys:
        return QueueKeys(self.settings.key_prefix, partitions=PARTITIONS)

    def start_worker(self, **extra: str) -> PulseProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env |= {
            "PULSE_REDIS_URL": self.lab.url,
            "PULSE_REDIS_CLUSTER": "true",
            "PULSE_REDIS_PARTITIONS": str(PARTITIONS),
            "PULSE_DATABASE_URL": self.settings.require_database_url(),
            "PULSE_KEY_PREFIX": self.settings.key_prefix,
            "PULSE_SMTP_HOST": "127.0.0.1",
            "PULSE_SMTP_PORT": str(self.smtp.port),
            "PULSE_SMTP_TLS": "none",
            "PULSE_SMTP_TIMEOUT_S": "5",
            "PULSE_WORKER_BLOCK_MS": "200",
            "PULSE_WORKER_RECLAIM_INTERVAL_MS": "200",
            "PULSE_RETRY_BASE_S": "0.1",
            "PULSE_RETRY_CAP_S": "0.5",
            "PULSE_RECONCILE_INTERVAL_S": "1",
            "PULSE_RECONCILE_AFTER_S": "2",
            "PULSE_LOG_LEVEL": "WARNING",
        } | extra
        worker = PulseProcess("worker", env, self.workdir / f"worker-{len(self.workers)}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    async def post(self, recipients: list[str]) -> list[str]:
        """Accept one notification per recipient; their ids. A 503 (the queue unreachable:
        nothing accepted) is retried after its Retry-After, as ``pulse.client`` does."""
        ids = []
        for recipient in recipients:
            body = {
                "recipient": recipient, "channel": "email", "priority": 2,
                "payload": {"subject": "Hello", "body": "partitioned"},
            }  # fmt: skip
            for _ in range(30):
                response = await self.client.post(
                    "/api/notifications/", json=body, headers=self.auth
                )
                if response.status != 503:
                    break
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            assert response.status == 202, await response.text()
            ids.append(msgspec.json.decode(await response.read())["id"])
        return ids

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT id::text, status FROM notifications WHERE id = ANY($1::uuid[])", ids
        )
        return {row["id"]: row["status"] for row in rows}

    async def wait_final(self, ids: list[str], *final: str) -> dict[str, str]:
        """Wait until every notification of ``ids`` is in one of ``final``; their statuses."""
        deadline = time.monotonic() + DEADLINE_S
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = await self.statuses(ids)
            if len(statuses) == len(ids) and all(s in final for s in statuses.values()):
                return statuses
            await asyncio.sleep(0.2)
        stuck = {i: s for i, s in statuses.items() if s not in final}
        raise AssertionError(f"{len(stuck)} not {final} in time: {list(stuck.items())[:5]}")

    def accepted(self, job_id: str) -> int:
        return self.smtp.handler.accepted[f"<{job_id}@pulse>"]


@pytest.fixture
async def deployment(
    cluster: ClusterLab, server_urls: ServerUrls, tmp_path: Path
) -> AsyncIterator[Deployment]:
    async with fresh_database(server_urls.postgres, "pulse_cluster") as database_url:
        settings = Settings(
            redis_url=cluster.url,
            redis_cluster=True,
            redis_partitions=PARTITIONS,
            database_url=database_url,
            key_prefix=spread_prefix(cluster),
            reconcile_interval_s=3600,  # the workers reconcile; the API does not
        )
        pool = await create_pool(database_url, 1, 4)
        redis = open_redis(cluster.url, cluster=True)
        await redis.ping()  # learns every node now: the one named may be killed later
        tenant = await TenantStore(pool).create(f"cluster-{secrets.token_hex(3)}")
        app = create_app(settings, channel_specs(settings), Metrics())
        workers: list[PulseProcess] = []
        deployment: Deployment | None = None
        with ScriptedSmtp(ScriptedHandler(slow_s=1.0)) as smtp:
            async with TestClient(TestServer(app)) as client:
                try:
                    deployment = Deployment(
                        settings, cluster, client, pool, redis, smtp,
                        {"Authorization": f"Bearer {tenant.api_key}"}, tmp_path, workers,
                    )  # fmt: skip
                    yield deployment
                finally:
                    for worker in workers:
                        worker.stop()
                    await redis.aclose()
                    await pool.close()
        assert_no_crashes(tmp_path, strict=deployment is not None and not deployment.failover)


def assert_no_crashes(workdir: Path, *, strict: bool) -> None:
    """Unless Redis failed over, no worker logged an error. Through a failover, errors are
    expected: commands to the dead master fail until the client finds its replica, and a
    fetcher blocked on it may even see uvloop's "handler is closed" RuntimeError (not a
    ConnectionError), which its supervisor answers with a restart; what counts is then that
    every notification is delivered, asserted by the test."""
    if not strict:
        return
    for log in workdir.glob("worker-*.log"):
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]


def failover_partition(deployment: Deployment) -> int:
    """A partition whose master has a replica to take over (the module's cluster has lost
    some to earlier failovers; the partitions are on three masters, so one still has one)."""
    for part in deployment.keys.partition_keys():
        if deployment.lab.has_replica(deployment.lab.master_of(part.stream(2))):
            return part.partition
    raise AssertionError("no master with a replica left")


async def stream_lengths(deployment: Deployment) -> list[int]:
    """Entries in each partition, whatever lane (the tenant's, by default) they wait in."""
    return [len(await placed(deployment.redis, part)) for part in deployment.keys.partition_keys()]


async def test_partitions_spread_over_masters_and_deliver(deployment: Deployment) -> None:
    masters = [deployment.lab.master_of(p.stream(2)) for p in deployment.keys.partition_keys()]
    assert len(set(masters)) == PARTITIONS  # each partition's stream on a master of its own

    ids = await deployment.post([f"user{i}@example.com" for i in range(150)])

    lengths = await stream_lengths(deployment)
    assert sum(lengths) == len(ids)
    assert all(length > 0 for length in lengths)  # every partition took a share
    deployment.start_worker()
    statuses = await deployment.wait_final(ids, "delivered", "failed")
    assert set(statuses.values()) == {"delivered"}
    assert all(deployment.accepted(job_id) == 1 for job_id in ids)
    assert await stream_lengths(deployment) == [0] * PARTITIONS  # acknowledged and deleted


async def test_retry_dead_letter_and_replay(deployment: Deployment) -> None:
    deployment.start_worker()
    flaky = await deployment.post([f"flaky2-f{i}@example.com" for i in range(6)])
    refused = await deployment.post([f"reject-r{i}@example.com" for i in range(6)])

    await deployment.wait_final(flaky, "delivered")
    await deployment.wait_final(refused, "failed")
    attempts = await deployment.pool.fetch(
        "SELECT notification_id::text AS id, count(*) AS n FROM attempts"
        " WHERE notification_id = ANY($1::uuid[]) GROUP BY 1",
        flaky,
    )
    assert {row["id"]: row["n"] for row in attempts} == dict.fromkeys(flaky, 3)  # 451, 451, 250
    assert all(deployment.accepted(job_id) == 1 for job_id in flaky)
    dead = sum(
        [
            int(await deployment.redis.xlen(p.dead_letters()))
            for p in deployment.keys.partition_keys()
        ]
    )
    assert dead == len(refused)  # in the dead letters of their partitions

    replayed = await deployment.client.post(
        "/api/dead-letters/replay", json={"error_class": "SMTP550"}, headers=deployment.auth
    )
    assert msgspec.json.decode(await replayed.read()) == {"replayed": len(refused)}
    await wait_dead_letters(deployment, len(refused))  # refused again: dead again, once each


async def wait_dead_letters(deployment: Deployment, count: int) -> None:
    for _ in range(int(DEADLINE_S * 10)):
        response = await deployment.client.get("/api/dead-letters", headers=deployment.auth)
        items: list[Any] = msgspec.json.decode(await response.read())["items"]
        replays = await deployment.pool.fetchval(
            "SELECT count(*) FROM audit WHERE status = 'replayed'"
        )
        if len(items) == count and replays == count:
            statuses = await deployment.statuses([i["notification_id"] for i in items])
            if set(statuses.values()) == {"failed"}:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the replayed notifications did not die again in time")


async def test_reclaim_after_a_sigkilled_worker(deployment: Deployment) -> None:
    lease = {"PULSE_WORKER_LEASE_MS": "1500"}
    doomed = deployment.start_worker(**lease)
    ids = await deployment.post([f"slow-s{i}@example.com" for i in range(30)])
    for _ in range(int(DEADLINE_S * 10)):  # the worker holds some, mid-delivery
        if "delivering" in (await deployment.statuses(ids)).values():
            break
        await asyncio.sleep(0.1)
    doomed.kill()

    deployment.start_worker(**lease)
    statuses = await deployment.wait_final(ids, "delivered", "failed")
    assert set(statuses.values()) == {"delivered"}
    assert all(deployment.accepted(job_id) >= 1 for job_id in ids)


async def test_reconciler_restreams_writes_a_failover_lost(deployment: Deployment) -> None:
    """The replica of partition 1's master replicates nothing while notifications are accepted;
    the master dies, the replica takes over without them. They are committed in PostgreSQL
    (202), missing in Redis; the workers' reconciler streams them again and all are sent."""
    deployment.failover = True
    part = deployment.keys.part(failover_partition(deployment))
    victim = deployment.lab.master_of(part.stream(2))
    before = await deployment.post([f"before{i}@example.com" for i in range(30)])
    replica = deployment.lab.freeze_replica_of(victim, part.tag + ":clog")
    unreplicated = await deployment.post([f"during{i}@example.com" for i in range(60)])
    await asyncio.to_thread(deployment.lab.kill_master, victim, thaw=replica)

    ids = before + unreplicated
    in_partition = [i for i in ids if deployment.keys.partition_of(i) == part.partition]
    streamed = len(await placed(deployment.redis, part))
    assert streamed < len(in_partition)  # the loss is real: accepted, gone from Redis
    deployment.start_worker()
    statuses = await deployment.wait_final(ids, "delivered", "failed")
    assert set(statuses.values()) == {"delivered"}
    assert all(deployment.accepted(job_id) == 1 for job_id in ids)


async def test_failover_of_a_master_mid_drain_loses_nothing(deployment: Deployment) -> None:
    """A master dies while workers drain; its replica takes over. Writes it had acknowledged
    but not yet replicated are gone from Redis: the reconciler streams them again from
    PostgreSQL, so every accepted notification is delivered."""
    deployment.failover = True
    ids = await deployment.post([f"user{i}@example.com" for i in range(200)])
    deployment.start_worker()
    victim = deployment.lab.master_of(
        deployment.keys.part(failover_partition(deployment)).stream(2)
    )
    for _ in range(int(DEADLINE_S * 10)):  # mid-drain
        if list((await deployment.statuses(ids)).values()).count("delivered") >= 20:
            break
        await asyncio.sleep(0.05)

    deployment.lab.kill_master(victim)
    ids += await deployment.post([f"after{i}@example.com" for i in range(50)])

    statuses = await deployment.wait_final(ids, "delivered", "failed")
    assert set(statuses.values()) == {"delivered"}
    assert all(deployment.accepted(job_id) >= 1 for job_id in ids)
    assert victim not in deployment.lab.master_ports()
