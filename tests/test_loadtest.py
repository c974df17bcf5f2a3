"""`make loadtest`'s script as a user runs it: a short headless Locust run against a Pulse it
starts, in one process and as one master with two workers, with its reports and deliveries."""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pulse.queue.keys import QueueKeys
from tests.conftest import ServerUrls, fresh_database

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Servers:
    redis_url: str
    database_url: str
    key_prefix: str


@pytest.fixture
async def servers(server_urls: ServerUrls) -> AsyncIterator[Servers]:
    """A database and a key prefix of the run's own, for the Pulse the script starts."""
    prefix = f"lt{secrets.token_hex(4)}"
    async with fresh_database(server_urls.postgres, "pulse_loadtest", migrated=False) as url:
        yield Servers(server_urls.redis, url, prefix)
    redis = Redis.from_url(server_urls.redis)
    try:
        keys = [key async for key in redis.scan_iter(match=QueueKeys(prefix).tag + "*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def run_loadtest(servers: Servers, out: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "LOADTEST_"))}
    env.update(
        PULSE_REDIS_URL=servers.redis_url,
        PULSE_DATABASE_URL=servers.database_url,
        PULSE_KEY_PREFIX=servers.key_prefix,
        LOADTEST_OUT=str(out),
        **settings,
    )
    return subprocess.run(
        [sys.executable, "-m", "loadtest.run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def stats(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's CSV: one row per (type, name), and the aggregate."""
    with (out / "stats_stats.csv").open() as rows:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(rows)}


def assert_requests_without_failures(rows: dict[tuple[str, str], dict[str, str]]) -> None:
    sends = rows["POST", "/api/notifications/ (send)"]
    assert int(sends["Request Count"]) > 0
    assert int(rows["GET", "/api/notifications/{id}"]["Request Count"]) > 0
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows


def assert_deliveries_measured(rows: dict[tuple[str, str], dict[str, str]], out: Path) -> None:
    delivered = rows["DELIVERY", "accept → delivered"]
    assert int(delivered["Request Count"]) > 0
    assert float(delivered["50%"]) > 0
    assert float(delivered["99%"]) >= float(delivered["50%"])
    summary = json.loads((out / "summary.json").read_text())["delivery"]
    assert summary["delivered"] == summary["accepted"] == int(delivered["Request Count"])
    assert (summary["failed"], summary["pending"]) == (0, 0)


async def test_a_headless_run_reports_requests_and_deliveries(
    servers: Servers, tmp_path: Path
) -> None:
    # Given the script, a database and key prefix of its own, a short run with few users
    out = tmp_path / "reports"
    # When it runs
    result = run_loadtest(servers, out, LOADTEST_USERS="4", LOADTEST_RUN_TIME="10s")
    # Then it succeeded and printed the summary: rate, failures, percentiles, deliveries
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Pulse load test summary" in result.stdout
    [http_line] = [line for line in result.stdout.splitlines() if line.startswith("  HTTP ")]
    assert " req/s, 0 failures; p50 " in http_line
    assert ", p95 " in http_line
    assert ", p99 " in http_line
    assert "accept → delivered p50 " in result.stdout
    # And the CSV and HTML reports are where it was told, with requests and no failures
    assert (out / "report.html").stat().st_size > 0
    rows = stats(out)
    assert_requests_without_failures(rows)
    # And every notification it was answered was delivered, each with its latency
    assert_deliveries_measured(rows, out)
    # And webhooks reached the receiver it started on loopback, each notification once
    webhooks = next(line for line in result.stdout.splitlines() if "received by" in line)
    assert int(webhooks.split()[1]) > 0
    assert webhooks.endswith(", 0 duplicates")


async def test_a_distributed_run_one_master_two_workers(servers: Servers, tmp_path: Path) -> None:
    # Given the script told to run one Locust master and two workers on loopback
    out = tmp_path / "reports"
    # When it runs a few seconds
    result = run_loadtest(
        servers, out, LOADTEST_USERS="4", LOADTEST_RUN_TIME="5s", LOADTEST_WORKERS="2"
    )
    # Then the master waited for both workers, and they ran the users and quit with it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 workers connected" in result.stderr
    for n in (1, 2):
        assert "Got quit message from master" in (out / f"locust-worker-{n}.log").read_text()
    # And the master's reports hold the workers' requests and deliveries, without failures
    rows = stats(out)
    assert_requests_without_failures(rows)
    assert_deliveries_measured(rows, out)
