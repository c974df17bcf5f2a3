"""The OpenAPI document is served, valid 3.1, and holds against the live API (schemathesis)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest

from pulse.http.openapi import build_spec
from pulse.store.tenants import TenantStore
from tests.conftest import Client

pytestmark = pytest.mark.system


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
    live_api: str, pool: asyncpg.Pool
) -> None:
    """Every operation, DELETEs included: each runs as a tenant of its own (see
    tests/schemathesis_hooks.py), so revoking its key cannot end the run."""
    operator = await TenantStore(pool).create(f"schemathesis-{secrets.token_hex(4)}", operator=True)
    schemathesis = shutil.which("schemathesis") or str(
        Path(sys.executable).with_name("schemathesis")
    )
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": str(Path(__file__).parent.parent),
        "PULSE_SCHEMATHESIS_API_URL": live_api,
        "PULSE_SCHEMATHESIS_OPERATOR_KEY": operator.api_key,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [
            schemathesis, "run", f"{live_api}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples", os.environ.get("PULSE_TEST_FUZZ_EXAMPLES", "25"),
            "--generation-deterministic",
            "--request-timeout", "10",
        ],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    operations = sum(len(methods) for methods in build_spec()["paths"].values())
    assert f"Tested: {operations}\n" in result.stdout, result.stdout[-6000:]  # DELETEs too
