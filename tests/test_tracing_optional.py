"""Processes as users start them: without ``OTEL_*`` Pulse imports nothing of OpenTelemetry
(even where the SDK is installed), without the package at all it runs as before, and
``PULSE_LOG_FORMAT=json`` makes every line of ``pulse api`` one JSON object, the request id and
trace id included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import pytest

from pulse.config import Settings
from pulse.devtools.ports import free_port
from tests.conftest import wait_http_ok

pytestmark = pytest.mark.system

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# Pulse's own modules up to the channels; redis-py (under the API and the worker) imports
# OpenTelemetry by itself whenever it is installed, so those are checked by NOT_INSTALLED.
IMPORTS = """
import sys
from pulse import tracing
from pulse.cli.main import main
from pulse.channels.registry import build_channels
tracing.configure({})
with tracing.span("probe", None) as span:
    pass
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""
NOT_INSTALLED = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
from pulse import tracing
from pulse.channels.registry import build_channels, channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.runtime.worker import build_worker
assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is False
with tracing.span("probe", None) as span:
    print(span.context.traceparent())
create_app(Settings(), channel_specs(Settings()))
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "OTEL_"))}


def test_without_otel_variables_nothing_of_opentelemetry_is_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], env=clean_env(), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_package_pulse_runs_and_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED], env=clean_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", done.stdout.strip())
    assert "pip install 'pulse[otel]'" in done.stderr


async def test_pulse_api_writes_json_lines(
    settings: Settings, auth: dict[str, str], tmp_path: Path
) -> None:
    port = free_port("127.0.0.1")
    env = clean_env() | {
        "PULSE_REDIS_URL": settings.require_redis_url(),
        "PULSE_DATABASE_URL": settings.require_database_url(),
        "PULSE_KEY_PREFIX": settings.key_prefix,
        "PULSE_HTTP_PORT": str(port),
        "PULSE_LOG_FORMAT": "json",
        "PULSE_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen([sys.executable, "-m", "pulse", "api"], env=env, stderr=log)
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        async with aiohttp.ClientSession() as session:
            headers = {"X-Request-ID": "req-api-1", "traceparent": f"00-{TRACE}-{'1' * 16}-01"}
            url = f"http://127.0.0.1:{port}/api/notifications/"
            body = {"channel": "log", "recipient": "ops", "payload": {"message": "hi"}}
            async with session.post(url, json=body, headers=auth | headers) as response:
                assert response.status == 202
                accepted = (await response.json())["id"]
    finally:
        api.terminate()
        api.wait(30)

    lines = [msgspec.json.decode(line) for line in log_path.read_text().splitlines()]
    assert any(line["message"].startswith("API listening") for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    (line,) = [line for line in lines if line["message"] == f"accepted {accepted} (log)"]
    assert line["request_id"] == "req-api-1"
    assert line["trace_id"] == TRACE
    assert line["level"] == "DEBUG"
