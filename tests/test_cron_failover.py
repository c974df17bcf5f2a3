"""Cron across real worker processes: two workers, the leader SIGKILLed between occurrences;
each occurrence is created exactly once and the standby takes over within the lock's ttl."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.queue.keys import QueueKeys
from pulse.queue.leader_lock import LeaderLock
from tests.chaos_lab import PulseProcess
from tests.conftest import Client

pytestmark = pytest.mark.system

LOCK_TTL_S = 3
LOG = {"recipient": "ops", "channel": "log", "payload": {"message": "every minute"}}


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    return env | {
        "PULSE_REDIS_URL": settings.require_redis_url(),
        "PULSE_DATABASE_URL": settings.require_database_url(),
        "PULSE_KEY_PREFIX": settings.key_prefix,
        "PULSE_LOG_LEVEL": "INFO",
        "PULSE_WORKER_BLOCK_MS": "100",
        "PULSE_RECONCILE_INTERVAL_S": "3600",
        "PULSE_CRON_LOCK_TTL_S": str(LOCK_TTL_S),
        "PULSE_CRON_TICK_S": "0.2",
    }


async def holder(redis: Redis, settings: Settings) -> str | None:
    lock = LeaderLock(redis, QueueKeys(settings.key_prefix).lock("cron"), "observer", LOCK_TTL_S)
    return await lock.holder_now()


async def wait_for(check: Any, what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def per_occurrence(pool: asyncpg.Pool, schedule_id: str) -> dict[datetime, int]:
    rows = await pool.fetch(
        "SELECT metadata->>'pulse.occurrence' AS at, count(*) AS n FROM notifications"
        " WHERE metadata->>'pulse.schedule_id' = $1 GROUP BY 1",
        schedule_id,
    )
    return {datetime.fromisoformat(row["at"]): row["n"] for row in rows}


async def up_to_date(pool: asyncpg.Pool, schedule_id: str) -> bool:
    """The schedule has fired every occurrence up to now."""
    done: bool = await pool.fetchval(
        "SELECT fired > 0 AND next_fire_at > now() FROM schedules WHERE id = $1", schedule_id
    )
    return done


async def schedule(client: Client, auth: dict[str, str], started_ago: timedelta) -> str:
    body = {
        "cron": "* * * * *",
        "notification": LOG,
        "starts_at": (datetime.now(UTC) - started_ago).isoformat(),
        "misfire": "catch_up",
        "catch_up_limit": 3,
    }
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 201, await response.text()
    schedule_id: str = msgspec.json.decode(await response.read())["id"]
    return schedule_id


def contiguous(times: list[datetime]) -> bool:
    return all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(times))


async def test_leader_sigkilled_between_occurrences_each_fires_once(
    settings: Settings, client: Client, auth: dict[str, str], redis: Redis,
    pool: asyncpg.Pool, tmp_path: Path,
) -> None:  # fmt: skip
    # Given two worker processes, one of them the cron leader
    workers = {
        name: PulseProcess("worker", worker_env(settings), tmp_path / f"{name}.log")
        for name in ("one", "two")
    }
    for process in workers.values():
        process.start()
    try:
        leader_name = await wait_for(lambda: holder(redis, settings), "a cron leader")
        leader = next(p for p in workers.values() if p.names[-1] == leader_name)
        standby = next(p for p in workers.values() if p is not leader)
        # And a minutely schedule that started five minutes ago (catch up the latest three)
        first = await schedule(client, auth, timedelta(minutes=5))
        await wait_for(lambda: up_to_date(pool, first), "the catch-up")
        caught_up = await per_occurrence(pool, first)
        # When the leader is SIGKILLed between occurrences
        killed_at = time.monotonic()
        leader.kill()
        # And a schedule is created while nobody leads
        second = await schedule(client, auth, timedelta(minutes=5))
        # Then the standby takes over and fires it
        await wait_for(lambda: per_occurrence(pool, second), "the standby firing", 30)
        took_over_s = time.monotonic() - killed_at
        assert await holder(redis, settings) == standby.names[-1]
        # And it fires the first schedule's next occurrence when it comes
        after_kill = max(caught_up) + timedelta(minutes=1)

        async def next_fired() -> bool:
            return after_kill in await per_occurrence(pool, first)

        await wait_for(next_fired, "the next occurrence", 90)
        await asyncio.sleep(1)  # a duplicate, were there one, would come within a tick
        # Then each occurrence was created exactly once, none skipped
        for schedule_id in (first, second):
            counts = await per_occurrence(pool, schedule_id)
            assert set(counts.values()) == {1}, counts
            assert contiguous(sorted(counts))
        assert len(caught_up) >= 3
        print(f"standby fired {took_over_s:.2f} s after the leader's SIGKILL (ttl {LOCK_TTL_S} s)")
    finally:
        for process in workers.values():
            process.stop()
    for name in ("one", "two"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
