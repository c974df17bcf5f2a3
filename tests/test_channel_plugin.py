"""A third-party channel plugin, installed as a package of its own (tests/plugins/), delivers
with the settings it was given, and a bad one of its settings stops the real process."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings, load_settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.store.tenants import NewTenant
from tests.conftest import WorkerFactory, pulse_api_exit, wait_for_status

pytestmark = pytest.mark.integration


async def test_the_plugin_delivers_with_its_own_settings(
    example_plugin: Path,
    settings: Settings,
    tenant: NewTenant,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    # Given the example channel configured by PULSE_CHANNEL_EXAMPLE__* variables
    env = {"PULSE_CHANNEL_EXAMPLE__OUTBOX": str(tmp_path), "PULSE_CHANNEL_EXAMPLE__GREETING": "Hi"}
    own = load_settings(env, dotenv_path=None).channel_settings
    configured = msgspec.structs.replace(settings, channel_settings=own)
    start_worker(configured)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    app = create_app(configured, channel_specs(configured), Metrics())

    # When a notification is sent on it
    async with TestClient(TestServer(app)) as client:
        body = {"recipient": "ada", "channel": "example", "payload": {"text": "there"}}
        response = await client.post("/api/notifications/", json=body, headers=auth)
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
        await wait_for_status(client, auth, location, "delivered")
        refused = await client.post(
            "/api/notifications/", json=body | {"payload": {}}, headers=auth
        )

    # Then it wrote the message with the configured greeting, and its payload is checked
    written = msgspec.json.decode((tmp_path / f"{location.rsplit('/', 1)[1]}.json").read_bytes())
    assert written == {"to": "ada", "text": "Hi, there"}
    assert refused.status == 422


def test_a_bad_plugin_setting_stops_the_process_naming_it(
    example_plugin: Path, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(example_plugin),
        "PULSE_CHANNEL_EXAMPLE__MAX_LENGTH": "zero",
    }

    result = pulse_api_exit(env, tmp_path)

    assert result.returncode == 2
    assert "PULSE_CHANNEL_EXAMPLE__MAX_LENGTH='zero' is invalid" in result.stderr
    assert "Traceback" not in result.stderr
