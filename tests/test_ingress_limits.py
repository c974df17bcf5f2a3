"""Ingress rate limits through the real app: operator API, 429s, headers, batches, isolation,
fail-open, and pulse.client waiting out a 429."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from pulse.channels.registry import channel_specs
from pulse.client import AsyncPulseClient
from pulse.config import Settings
from pulse.core.limits import LimitOverrides
from pulse.http.app import create_app
from pulse.http.limits import Ingress
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.limiter import RateLimiter
from pulse.store.limits import LimitCache, LimitStore
from pulse.store.tenants import NewTenant, TenantStore
from tests.conftest import Client

pytestmark = pytest.mark.integration

LOG = {"channel": "log", "recipient": "ops", "payload": {"message": "hi"}}
# draft-ietf-httpapi-ratelimit-headers: a structured-field list of string items with parameters
ITEM = re.compile(r'^"(?P<name>[a-z]+)"(?P<params>(;[a-z]+=\d+)+)$')


def bearer(tenant: NewTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def parse_list(field: str) -> dict[str, dict[str, int]]:
    """A list of ``"name";k=1;k2=2`` items, as RFC 8941 reads it (integers, string items)."""
    items: dict[str, dict[str, int]] = {}
    for member in field.split(","):
        match = ITEM.match(member.strip())
        assert match, f"not a structured-field item: {member!r}"
        params = dict(p.split("=") for p in match["params"].split(";")[1:])
        items[match["name"]] = {k: int(v) for k, v in params.items()}
    return items


@pytest.fixture
async def operator(pool: asyncpg.Pool) -> dict[str, str]:
    admin = await TenantStore(pool).create(f"op-{secrets.token_hex(4)}", operator=True)
    return bearer(admin)


async def set_limits(client: Client, operator: dict[str, str], tenant: str, **body: Any) -> Any:
    response = await client.put(f"/api/tenants/{tenant}/limits", json=body, headers=operator)
    assert response.status == 200, await response.text()
    return await response.json()


async def send(client: Client, auth: dict[str, str]) -> Any:
    return await client.post("/api/notifications/", json=LOG, headers=auth)


async def test_an_operator_sets_and_reads_a_tenants_limits(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given no limits set: the deployment's defaults (off) are in force
    response = await client.get(f"/api/tenants/{tenant.tenant_id}/limits", headers=operator)
    document = await response.json()
    assert document["effective"] == {"tenant": None, "key": None}
    assert document["updated_at"] is None
    # When the operator sets a tenant limit (burst left to its default: one second's worth)
    document = await set_limits(client, operator, tenant.tenant_id, rate_per_s=2.5)
    # Then it is in force, stored and answered
    assert document["effective"]["tenant"] == {"per_s": 2.5, "burst": 3}
    assert document["rate_per_s"] == 2.5
    assert document["updated_at"] is not None
    # And a tenant's own admin key may not do it, nor may anyone set a nonsense value
    refused = await client.put(
        f"/api/tenants/{tenant.tenant_id}/limits", json={"rate_per_s": 1}, headers=auth
    )
    assert refused.status == 403
    bad = await client.put(
        f"/api/tenants/{tenant.tenant_id}/limits", json={"burst": 0}, headers=operator
    )
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["pointer"] == "/burst"
    missing = await client.get(f"/api/tenants/{secrets.token_hex(16)}/limits", headers=operator)
    assert missing.status == 404


async def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a tenant limited to 1 a second with a burst of 3
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=1, burst=3)
    # When it sends 3 notifications, then a 4th at once
    accepted = [await send(client, auth) for _ in range(3)]
    refused = await send(client, auth)
    # Then the burst is accepted, each answer telling what remains
    assert [r.status for r in accepted] == [202, 202, 202]
    remaining = [parse_list(r.headers["RateLimit"])["tenant"]["r"] for r in accepted]
    assert remaining == [2, 1, 0]
    assert parse_list(accepted[0].headers["RateLimit-Policy"]) == {"tenant": {"q": 3, "w": 3}}
    # And the 4th is a 429 problem saying when to come back, with nothing accepted
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    assert parse_list(refused.headers["RateLimit"])["tenant"]["r"] == 0
    assert parse_list(refused.headers["RateLimit-Policy"]) == {"tenant": {"q": 3, "w": 3}}
    listing = await (await client.get("/api/notifications/", headers=auth)).json()
    assert len(listing["items"]) == 3


async def test_another_tenant_is_unaffected(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str],
    pool: asyncpg.Pool,
) -> None:  # fmt: skip
    # Given one tenant that used up its limit
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.1, burst=1)
    assert (await send(client, auth)).status == 202
    assert (await send(client, auth)).status == 429
    # When another tenant sends
    other = await TenantStore(pool).create(f"other-{secrets.token_hex(4)}")
    answers = [await send(client, bearer(other)) for _ in range(5)]
    # Then it is not held back (and, without limits, carries no limit headers)
    assert [a.status for a in answers] == [202] * 5
    assert "RateLimit" not in answers[0].headers


async def test_a_batch_counts_its_items_all_or_nothing(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a burst of 5, 3 of which are used
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=5)
    for _ in range(3):
        assert (await send(client, auth)).status == 202
    # When a batch of 3 arrives: more than the 2 remaining
    batch = {"template": {"channel": "log", "payload": {"message": "x"}}, "recipients": ["a"] * 3}
    refused = await client.post("/api/notifications/batch", json=batch, headers=auth)
    # Then it is refused whole
    assert refused.status == 429
    listing = await (await client.get("/api/notifications/", headers=auth)).json()
    assert len(listing["items"]) == 3
    # And a batch of 2 fits, leaving nothing
    batch["recipients"] = ["a", "b"]
    fits = await client.post("/api/notifications/batch", json=batch, headers=auth)
    assert fits.status == 202
    assert parse_list(fits.headers["RateLimit"])["tenant"]["r"] == 0
    # And a batch larger than the whole burst could never pass: 422, not a 429 to retry
    batch["recipients"] = ["a"] * 6
    never = await client.post("/api/notifications/batch", json=batch, headers=auth)
    assert never.status == 422
    assert (await never.json())["errors"][0]["pointer"] == "/recipients"


async def test_each_key_has_its_own_limit(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a per-key limit of a burst of 2
    await set_limits(client, operator, tenant.tenant_id, key_rate_per_s=0.01, key_burst=2)
    created = await client.post("/api/keys", json={"name": "second"}, headers=auth)
    second = {"Authorization": f"Bearer {(await created.json())['api_key']}"}
    # When the first key uses its burst up
    assert [(await send(client, auth)).status for _ in range(3)] == [202, 202, 429]
    # Then the tenant's other key still has its own
    answer = await send(client, second)
    assert answer.status == 202
    assert parse_list(answer.headers["RateLimit"]) == {"key": {"r": 1, "t": 100}}


async def test_parallel_clients_get_the_rate_and_no_more(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a limit of L = 20 a second with a burst of 20, and 8 clients sending back to back
    rate, burst = 20, 20
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=rate, burst=burst)
    accepted: list[tuple[float, float]] = []  # (sent, answered) of each accepted request
    stop_at = time.monotonic() + 2.5

    async def sender() -> None:
        while (sent := time.monotonic()) < stop_at:
            response = await send(client, auth)
            assert response.status in (202, 429)
            if response.status == 202:
                accepted.append((sent, time.monotonic()))

    # When they send for a span of a few seconds
    await asyncio.gather(*(sender() for _ in range(8)))
    # Then what was accepted is the burst plus L per second between the first and the last
    # admission, within one; the limiter admitted each between its request's sending and its
    # answer, so the span lies between these two measures of it
    longest = max(answered for _, answered in accepted) - min(sent for sent, _ in accepted)
    shortest = max(sent for sent, _ in accepted) - min(answered for _, answered in accepted)
    assert len(accepted) <= burst + rate * longest + 1
    assert len(accepted) >= burst + rate * shortest - 1


async def test_changes_are_in_force_at_once_in_every_api_process(
    settings: Settings, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str],
    client: Client,
) -> None:  # fmt: skip
    # Given a second API process that has already looked the tenant's (absent) limits up
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestServer(app) as server:
        other = f"http://{server.host}:{server.port}"
        async with AsyncPulseClient(other, tenant.api_key, max_retries=0) as pulse:
            await pulse.send("ops", "log", {"message": "before"})
            # When the operator sets a limit through the first process
            await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=1)
            # Then the second enforces it at once (its cache was emptied)
            await pulse.send("ops", "log", {"message": "first"})
            with pytest.raises(Exception, match="429"):
                await pulse.send("ops", "log", {"message": "second"})


async def test_an_unreachable_limiter_lets_requests_through(pool: asyncpg.Pool) -> None:
    # Given a limiter whose Redis is unreachable and a tenant with a limit
    tenant = await TenantStore(pool).create(f"t-{secrets.token_hex(4)}")
    await LimitStore(pool).put(tenant.tenant_id, LimitOverrides(rate_per_s=1, burst=1))
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    metrics = Metrics()
    ingress = Ingress(
        LimitCache(LimitStore(pool), 5.0),
        RateLimiter(dead, QueueKeys("unreachable")),
        LimitOverrides(),
        metrics,
    )
    # When requests ask to be admitted
    try:
        answers = [await ingress.admit(tenant.tenant_id, "k", 1, "$") for _ in range(3)]
    finally:
        await dead.aclose()
    # Then they pass (fail-open: no 500, no 429), without limit headers, and are counted
    assert answers == [{}, {}, {}]
    assert metrics.registry.get_sample_value("pulse_rate_limiter_unavailable_total") == 3


async def test_the_client_waits_out_a_429_with_the_same_idempotency_key(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a tenant limited to a burst of 1, refilled in one second
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=1, burst=1)
    base = str(client.make_url("")).rstrip("/")
    async with AsyncPulseClient(base, tenant.api_key, max_retries=3) as pulse:
        # When it sends twice in a row
        first = await pulse.send("ops", "log", {"message": "one"})
        second = await pulse.send("ops", "log", {"message": "two"}, idempotency_key="k-2")
    # Then the second waited (Retry-After) and was accepted, once
    listing = await (await client.get("/api/notifications/", headers=auth)).json()
    assert {item["id"] for item in listing["items"]} == {first.id, second.id}


async def test_raising_a_limit_lifts_its_lock_out_at_once(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a tenant locked out by a slow limit (5 at once, then one per 100 s)
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=5)
    assert [(await send(client, auth)).status for _ in range(6)] == [202] * 5 + [429]
    # When the operator raises its limit
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=1000, burst=1000)
    # Then it sends again at once
    assert (await send(client, auth)).status == 202
    # And turning a limit off and on again is in force at once as well
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=1)
    assert [(await send(client, auth)).status for _ in range(2)] == [202, 429]
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0)
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=500, burst=500)
    assert (await send(client, auth)).status == 202


async def test_a_rate_below_one_a_day_is_refused_naming_the_field(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    url = f"/api/tenants/{tenant.tenant_id}/limits"
    # When an operator sets a rate that is neither off (0) nor at least one a day
    for field, value in [("key_rate_per_s", 1e-300), ("rate_per_s", 1e-9), ("rate_per_s", -1)]:
        refused = await client.put(url, json={field: value}, headers=operator)
        # Then it is a 422 naming the field, and nothing changes
        assert refused.status == 422, (field, value)
        assert (await refused.json())["errors"][0]["pointer"] == f"/{field}"
    document = await (await client.get(url, headers=operator)).json()
    assert document["effective"] == {"tenant": None, "key": None}
    # And the tenant's sends are still accepted (never a 500)
    assert (await send(client, auth)).status == 202
    # And the slowest rate allowed, one a day, is in force as set
    await set_limits(client, operator, tenant.tenant_id, key_rate_per_s=1 / 86_400, key_burst=1)
    assert [(await send(client, auth)).status for _ in range(2)] == [202, 429]


async def test_a_replay_of_an_answered_idempotency_key_is_never_refused_by_the_limit(
    client: Client, operator: dict[str, str], tenant: NewTenant, auth: dict[str, str]
) -> None:
    # Given a tenant with a burst of 1, used by a request with an Idempotency-Key
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=1)
    keyed = auth | {"Idempotency-Key": "order-1"}
    first = await client.post("/api/notifications/", json=LOG, headers=keyed)
    assert first.status == 202
    # When the client sends the same request with the same key again (its answer was lost)
    again = await client.post("/api/notifications/", json=LOG, headers=keyed)
    # Then it gets the first answer again, not a 429
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    # And a batch replays alike, while a new request is still refused
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=2)
    batch = {"template": {"channel": "log", "payload": {"message": "x"}}, "recipients": ["a"] * 2}
    batch_keyed = auth | {"Idempotency-Key": "batch-1"}
    sent = await client.post("/api/notifications/batch", json=batch, headers=batch_keyed)
    assert sent.status == 202
    replayed = await client.post("/api/notifications/batch", json=batch, headers=batch_keyed)
    assert replayed.status == 202
    assert await replayed.json() == await sent.json()
    fresh = auth | {"Idempotency-Key": "order-2"}
    assert (await client.post("/api/notifications/", json=LOG, headers=fresh)).status == 429
    listing = await (await client.get("/api/notifications/", headers=auth)).json()
    assert [item["id"] for item in listing["items"]] == [(await first.json())["id"]]
