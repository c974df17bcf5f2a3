"""The OpenAPI document is served, valid 3.1, and holds against the live API (schemathesis)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec

from pulse.config import Settings
from pulse.devsmtp import free_port
from pulse.store.tenants import NewTenant
from tests.conftest import Client


async def test_openapi_document_and_offline_docs_page(client: Client) -> None:
    response = await client.get("/openapi.json")
    spec = msgspec.json.decode(await response.read())

    assert spec["openapi"] == "3.1.0"
    assert "/api/notifications/" in spec["paths"]
    request_schema = spec["components"]["schemas"]["NotificationRequest"]
    assert {"recipient", "channel", "payload"} <= set(request_schema["required"])

    page = await client.get("/docs")
    html = await page.text()
    assert page.status == 200
    assert "http" not in html.replace("/docs/assets", "")  # no asset from the internet
    assert (await client.get("/docs/assets/swagger-ui-bundle.js")).status == 200
    assert (await client.get("/docs/assets/swagger-ui.css")).status == 200


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    settings: Settings, tenant: NewTenant, tmp_path: Path
) -> None:
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_HTTP_PORT=str(port),
        PULSE_LOG_LEVEL="WARNING",
    )
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen([sys.executable, "-m", "pulse", "api"], env=env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(base)
        schemathesis = shutil.which("schemathesis") or str(
            Path(sys.executable).with_name("schemathesis")
        )
        result = await asyncio.to_thread(
            subprocess.run,
            [
                schemathesis, "run", f"{base}/openapi.json",
                "--checks", "not_a_server_error,status_code_conformance,"
                "content_type_conformance,response_schema_conformance",
                "--header", f"Authorization: Bearer {tenant.api_key}",
                "--max-examples", os.environ.get("PULSE_TEST_FUZZ_EXAMPLES", "25"),
                "--generation-deterministic",
                "--request-timeout", "10",
            ],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        api.terminate()
        api.wait(30)
        log.close()
    server_log = (tmp_path / "api.log").read_text()
    assert result.returncode == 0, result.stdout[-6000:] + server_log[-3000:]
    assert "unhandled error" not in server_log


async def wait_up(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the API did not start")
