"""Group commit: the accepts of one loop tick are written in one statement, and each still gets
the answer it would get alone; a failing row does not fail its neighbours; an outage fails the
group whole, with nothing of it written.

The accepts are submitted to the app's own accept service in one tick (``asyncio.gather``), so
they form one group; rows of one statement share its transaction time, which the tests check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.errors import Unavailable
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.http.app import create_app
from pulse.http.state import ACCEPT
from pulse.queue.keys import QueueKeys
from pulse.services.accept import AcceptService, Answer, IdempotencyKey, KeyBusy, KeyReused
from pulse.services.accept import fingerprint as fingerprint_of
from pulse.store.errors import TRANSIENT_DB_ERRORS, UNSTORABLE_VALUE_ERRORS
from pulse.store.tenants import NewTenant
from tests.queue_view import waiting
from tests.test_accept_service import count_for, through_relay

pytestmark = pytest.mark.integration
MANY = 40


def job_for(tenant: NewTenant, recipient: str = "ops") -> Job:
    return Job(
        id=str(uuid7()), tenant_id=tenant.tenant_id, kind=JobKind.NOTIFICATION, channel="log",
        recipient=recipient, payload={"message": "hi"}, priority=2, max_attempts=3,
    )  # fmt: skip


def key(value: str, body: Any = "body") -> IdempotencyKey:
    return IdempotencyKey(value, fingerprint_of(body))


@asynccontextmanager
async def accept_service(settings: Settings) -> AsyncIterator[AcceptService]:
    app = create_app(settings, channel_specs(settings))
    async with TestClient(TestServer(app)):
        yield app[ACCEPT]


async def all_at_once(
    service: AcceptService, requests: list[tuple[Job, IdempotencyKey | None]]
) -> list[Answer | BaseException]:
    """Submit every request in the same loop tick: one group."""
    calls = [service.notification(job, None, key) for job, key in requests]
    return await asyncio.gather(*calls, return_exceptions=True)


async def stream_ids(redis: Redis, keys: QueueKeys) -> set[str]:
    return set(await waiting(redis, keys))


async def test_a_group_commits_every_row_with_its_own_answer_and_only_the_faulty_one_fails(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, keys: QueueKeys, tenant: NewTenant
) -> None:
    async with accept_service(settings) as service:
        # Given two keys answered before
        answered = [job_for(tenant), job_for(tenant)]
        first = await service.notification(answered[0], None, key("answered-1", "one"))
        second = await service.notification(answered[1], None, key("answered-2", "one"))
        assert (first.status, second.status) == (202, 202)

        # When many accepts arrive at once: plain ones, keyed ones, a replay of that key, the
        # other key with another body, twins with one new key, and a value PostgreSQL refuses
        plain = [(job_for(tenant), None) for _ in range(MANY)]
        keyed = [(job_for(tenant), key(f"k-{i}")) for i in range(5)]
        replay = (job_for(tenant), key("answered-1", "one"))
        reused = (job_for(tenant), key("answered-2", "two"))
        twins = [(job_for(tenant), key("twin")), (job_for(tenant), key("twin"))]
        refused = (job_for(tenant, recipient="nul\x00byte"), None)
        requests = [*plain, *keyed, replay, reused, *twins, refused]
        outcomes = await all_at_once(service, requests)

    # Then every row is answered as it would be alone
    by_position = dict(enumerate(outcomes))
    accepted = [o for o in outcomes if isinstance(o, Answer) and not o.replayed]
    assert len(accepted) == MANY + 5 + 1  # the plain, the keyed, one of the twins
    assert by_position[MANY + 5] == replayed(first)
    assert isinstance(by_position[MANY + 6], KeyReused)
    # (the refused value sends the group back row by row: the second twin may find the key
    # in flight or already answered, as two requests sent alone would)
    twin_outcomes = [by_position[MANY + 7], by_position[MANY + 8]]
    twin_first = next(o for o in twin_outcomes if isinstance(o, Answer) and not o.replayed)
    twin_other = next(o for o in twin_outcomes if o is not twin_first)
    assert isinstance(twin_other, KeyBusy) or twin_other == replayed(twin_first)
    assert isinstance(by_position[MANY + 9], UNSTORABLE_VALUE_ERRORS)

    # And exactly the accepted ones (and the first two) are committed and streamed
    committed = {
        str(row["id"])
        for row in await pool.fetch(
            "SELECT id FROM notifications WHERE tenant_id = $1", tenant.tenant_id
        )
    }
    ids = {msgspec.json.decode(a.body)["id"] for a in accepted}
    assert committed == ids | {job.id for job in answered}
    assert await stream_ids(redis, keys) == committed
    audit = await pool.fetchval(
        "SELECT count(*) FROM audit WHERE status = 'queued' AND notification_id = ANY($1::uuid[])",
        list(committed),
    )
    assert audit == len(committed)


def replayed(answer: Answer) -> Answer:
    return Answer(answer.status, answer.body, answer.location, replayed=True)


async def test_accepts_of_one_tick_are_committed_together(
    settings: Settings, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    async with accept_service(settings) as service:
        requests = [(job_for(tenant), None if i % 2 else key(f"g-{i}")) for i in range(MANY)]
        twins = [(job_for(tenant), key("twin")), (job_for(tenant), key("twin"))]
        *outcomes, twin, its_twin = await all_at_once(service, [*requests, *twins])

    assert all(isinstance(o, Answer) and o.status == 202 for o in [*outcomes, twin])
    assert isinstance(its_twin, KeyBusy)  # the same key twice in flight: 409, as ever
    outcomes.append(twin)
    times = await pool.fetch(
        "SELECT DISTINCT created_at FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    assert len(times) == 1  # one transaction: one now()
    answered_times = {msgspec.json.decode(o.body)["created_at"] for o in outcomes}  # type: ignore[union-attr]
    assert answered_times == {times[0]["created_at"].isoformat()}


async def test_postgresql_stopping_mid_group_fails_every_row_and_writes_none(
    settings: Settings, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    requests = [(job_for(tenant), None if i % 2 else key(f"o-{i}")) for i in range(MANY)]
    cut_on = b"INSERT INTO notifications"
    async with (
        through_relay(settings, cut_on) as (relay, relayed),
        accept_service(relayed) as service,
    ):
        # Given PostgreSQL stops while a group is being written
        outcomes = await all_at_once(service, requests)
        assert relay.cuts == 1

        # Then every request of it fails as an outage (the API's 503) and nothing is written
        assert all(isinstance(o, TRANSIENT_DB_ERRORS) for o in outcomes), outcomes
        assert await count_for(pool, tenant) == 0
        assert await count_for(pool, tenant, "idempotency_keys") == 0

        # When it is back, the same requests are processed normally, once
        relay.restore()
        again = await all_at_once(service, requests)

    assert all(isinstance(o, Answer) and not o.replayed for o in again), again
    assert await count_for(pool, tenant) == MANY
    assert await count_for(pool, tenant, "idempotency_keys") == MANY // 2


async def test_redis_down_withdraws_a_groups_unkeyed_rows_and_keeps_its_keyed_ones(
    settings: Settings, pool: asyncpg.Pool, tenant: NewTenant
) -> None:
    down = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    requests = [(job_for(tenant), None if i % 2 else key(f"r-{i}")) for i in range(MANY)]
    # Given Redis is unreachable, when a group is committed
    async with accept_service(down) as service:
        outcomes = await all_at_once(service, requests)

    # Then every request is refused as an outage (503), and only the keyed commits stay, for
    # the reconciler to stream (a retry with the key is answered by them)
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    kept = await pool.fetch("SELECT id FROM notifications WHERE tenant_id = $1", tenant.tenant_id)
    assert {str(row["id"]) for row in kept} == {job.id for job, k in requests if k is not None}
