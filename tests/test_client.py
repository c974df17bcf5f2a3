"""pulse.client against a live server, and its retry behaviour against a flaky one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pulse.client import AsyncPulseClient, PulseAPIError, PulseClient
from pulse.store.tenants import NewTenant

pytestmark = pytest.mark.system


async def test_async_client_sends_reads_lists_and_cancels(live_api: str, tenant: NewTenant) -> None:
    async with AsyncPulseClient(live_api, tenant.api_key) as pulse:
        accepted = await pulse.send(
            "someone@example.com",
            "email",
            {"subject": "Hello", "body": "Welcome to Pulse"},
            priority=1,
            metadata={"order": "7"},
        )
        assert accepted.status == "queued"
        document = await pulse.get(accepted.id)
        assert document.metadata == {"order": "7"}
        assert [h.status for h in document.history] == ["queued"]
        listed = await pulse.list(**{"metadata.order": "7"})
        assert [item.id for item in listed.items] == [accepted.id]
        cancelled = await pulse.cancel(accepted.id)
        assert cancelled.status == "cancelled"
        assert (await pulse.attempts(accepted.id)).attempts == []
        with pytest.raises(PulseAPIError) as caught:
            await pulse.send("not-an-address", "email", {"subject": "s", "body": "b"})
        assert caught.value.status == 422
        assert caught.value.problem["errors"][0]["pointer"] == "/recipient"


async def test_sync_client(live_api: str, tenant: NewTenant) -> None:
    def use() -> tuple[str, str]:
        with PulseClient(live_api, tenant.api_key) as pulse:
            accepted = pulse.send("sync@example.com", "log", {"message": "hi"})
            return accepted.id, pulse.get(accepted.id).status

    notification_id, status = await asyncio.to_thread(use)
    assert notification_id
    assert status in ("queued", "delivering", "delivered")


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, list[str | None]]]:
    """Answers 503 (Retry-After: 0) twice, then 202; records each Idempotency-Key it saw."""
    keys: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        if len(keys) <= 2:
            return web.json_response({"status": 503, "detail": "busy"}, status=503,
                                     headers={"Retry-After": "0"})  # fmt: skip
        return web.json_response(
            {"id": "x", "status": "queued", "channel": "log", "priority": 2, "created_at": "t"},
            status=202,
        )

    app = web.Application()
    app.router.add_post("/api/notifications/", handler)
    async with TestServer(app) as server:
        yield str(server.make_url("")), keys


async def test_retries_on_503_reuse_one_idempotency_key(
    flaky: tuple[str, list[str | None]],
) -> None:
    base, keys = flaky
    async with AsyncPulseClient(base, "pk_test") as pulse:
        accepted = await pulse.send("a@example.com", "log", {"message": "m"})

    assert accepted.id == "x"
    assert len(keys) == 3
    assert keys[0] is not None
    assert len(set(keys)) == 1  # one key across the retries: the server can deduplicate
