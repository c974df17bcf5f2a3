"""pulse.client against a live server, and its retry behaviour against a flaky one."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import venv
from collections.abc import AsyncIterator, Iterable
from importlib.metadata import distribution
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pulse.client import AsyncPulseClient, PulseAPIError, PulseClient
from pulse.store.tenants import NewTenant

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".tools" / "bin" / "uv"
# What the README says the client needs.
CLIENT_DEPENDENCIES = ("aiohttp", "msgspec")


def readme_python_snippet() -> str:
    """The ```python block of the README's "Python client" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python client\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def with_requirements(names: Iterable[str]) -> set[str]:
    """``names`` and everything they need here (extras and other platforms' needs left out)."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found.add(name)
        for line in distribution(name).requires or []:
            needed = Requirement(line)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                todo.append(needed.name)
    return found


def copy_distribution(name: str, site_packages: Path) -> None:
    """Install ``name`` into another environment by copying its installed files (no network)."""
    dist = distribution(name)
    for file in dist.files or []:
        source = Path(str(dist.locate_file(file)))
        if file.parts[0] == ".." or not source.is_file():  # scripts outside site-packages
            continue
        target = site_packages / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def client_only_venv(where: Path) -> Path:
    """A virtual environment holding only the client's dependencies (copied from this one) and
    Pulse installed without its own, as the README says; nothing is fetched from the network."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    site_packages = next(where.glob("lib/python*/site-packages"))
    for name in with_requirements(CLIENT_DEPENDENCIES):
        copy_distribution(name, site_packages)
    subprocess.run(
        [
            str(UV),
            "pip",
            "install",
            "--offline",
            "--quiet",
            "--no-deps",
            "--python",
            str(python),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    return python


def run_python(
    python: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        env=env,
        cwd=python.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


async def test_the_readme_snippet_runs_where_only_the_client_is_installed(
    live_api: str, tenant: NewTenant, tmp_path: Path
) -> None:
    # Given a virtual environment with only aiohttp, msgspec and Pulse without its dependencies
    python = await asyncio.to_thread(client_only_venv, tmp_path / "venv")
    server_only = await asyncio.to_thread(run_python, python, "-c", "import asyncpg")
    assert "No module named 'asyncpg'" in server_only.stderr

    # When the README's client snippet is saved to a file and run
    script = tmp_path / "send.py"
    script.write_text(readme_python_snippet())
    env = {"PATH": os.environ["PATH"], "PULSE_URL": live_api, "PULSE_KEY": tenant.api_key}
    result = await asyncio.to_thread(run_python, python, str(script), env=env)

    # Then it sent both notifications, and the client imported none of the server
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.split()[1] in ("queued", "delivering", "delivered")
    assert second == "queued"
