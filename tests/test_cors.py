"""CORS, when configured: preflight answered, the allowed origin echoed, others ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from tests.conftest import Client

pytestmark = pytest.mark.integration


@pytest.fixture
async def cors_client(settings: Settings) -> AsyncIterator[Client]:
    allowed = msgspec.structs.replace(settings, cors_origins="https://app.example.com")
    async with TestClient(TestServer(create_app(allowed, channel_specs(allowed)))) as client:
        yield client


async def test_preflight_and_allowed_origin(cors_client: Client) -> None:
    preflight = await cors_client.options(
        "/api/notifications/",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]

    other = await cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
