"""PULSE_DB_STATEMENT_CACHE_SIZE: the API's statements stay prepared per connection by default,
none is left on the server session with 0 (pgbouncer's transaction mode), and the accept path's
statements (the Idempotency-Key claim and its replay, batches, key lookups, reads) are correct
either way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.http.state import POOL
from pulse.metrics import Metrics
from tests.conftest import EXAMPLE, Client

pytestmark = pytest.mark.integration


@pytest.fixture(params=[0, 100], ids=["cache-off", "cache-on"])
async def sized(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Client, int]]:
    """The API on a pool of exactly one connection (so its session is the one inspected),
    with PULSE_DB_STATEMENT_CACHE_SIZE set to the parameter."""
    tuned = msgspec.structs.replace(
        settings, db_pool_min=1, db_pool_max=1, db_statement_cache_size=request.param
    )
    app = create_app(tuned, channel_specs(tuned), Metrics())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, request.param


async def _accept_twice_each_way(client: Client, auth: dict[str, str]) -> None:
    keyed = auth | {"Idempotency-Key": "cache-key"}
    for attempt in range(2):
        plain = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
        assert plain.status == 202, await plain.text()
        answer = await client.post("/api/notifications/", json=EXAMPLE, headers=keyed)
        assert answer.status == 202, await answer.text()
        assert (answer.headers.get("Idempotent-Replayed") == "true") == (attempt == 1)
        batch = {"items": [EXAMPLE, EXAMPLE]}
        batched = await client.post("/api/notifications/batch", json=batch, headers=auth)
        assert batched.status == 202, await batched.text()
        read = await client.get(f"/api/notifications/{(await plain.json())['id']}", headers=auth)
        assert read.status == 200


async def _prepared_statements(client: Client) -> int:
    assert client.app is not None
    count: int = await client.app[POOL].fetchval("SELECT count(*) FROM pg_prepared_statements")
    return count


async def test_cache_on_keeps_statements_prepared_and_every_accept_works(
    sized: tuple[Client, int], auth: dict[str, str]
) -> None:
    # Given the API with PULSE_DB_STATEMENT_CACHE_SIZE=0 or 100
    client, cache_size = sized
    # When every kind of accept runs twice
    await _accept_twice_each_way(client, auth)
    # Then its one session holds prepared statements exactly when the cache is on
    prepared = await _prepared_statements(client)
    assert (prepared > 3) if cache_size else (prepared == 0)
