"""The dashboard in a real headless Chromium (Debian's, driven by Playwright, which downloads no
browser) against a running Pulse: API and worker on loopback, real Redis, PostgreSQL and SMTP.

The browser is kept on loopback: host resolution maps every other name to nothing, a proxy on a
closed loopback port catches anything else, and a request guard refuses (and records) any
request for another host. The screenshot of the dashboard with data is saved in the test's
folder, and to docs/dashboard.png with UPDATE_DASHBOARD_SCREENSHOT=1 (so `make test` leaves the
work tree clean).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import msgspec
import pytest
from playwright.async_api import BrowserContext, Page, Route, async_playwright, expect

from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.store.tenants import TenantStore
from tests.conftest import EXAMPLE, Client, WorkerFactory, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "dashboard.png"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WAIT_MS = 15_000  # generous: a shared CI machine; the page itself updates every second


def chromium_executable() -> str:
    """Debian's Chromium, installed by scripts/install-chromium.sh where missing."""
    candidates = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
    if not any(Path(c).exists() for c in candidates):
        subprocess.run(["bash", str(ROOT / "scripts" / "install-chromium.sh")], check=True)
    found = next((c for c in candidates if Path(c).exists()), shutil.which("chromium"))
    assert found, "chromium is not installed and scripts/install-chromium.sh could not install it"
    return found


def launch_flags() -> list[str]:
    closed_port = free_port("127.0.0.1")  # nothing listens there: a proxy that goes nowhere
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1",
        f"--proxy-server=http://127.0.0.1:{closed_port}",
    ]


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler(slow_s=0.15)) as server:
        yield server


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[tuple[BrowserContext, list[str]]]:
    """A fresh Chromium profile; yields the context and the requests refused for leaving
    loopback."""
    refused: list[str] = []

    async def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium_executable(),
            headless=True,
            args=launch_flags(),
            viewport={"width": 1440, "height": 900},
            device_scale_factor=1,
        )
        await context.route("**/*", loopback_only)
        try:
            yield context, refused
        finally:
            await context.close()


async def send(client: Client, auth: dict[str, str], recipient: str, **extra: object) -> str:
    channel = "log" if recipient.startswith("log:") else "email"
    payload = {"message": recipient} if channel == "log" else EXAMPLE["payload"]
    body = EXAMPLE | {"recipient": recipient, "channel": channel, "payload": payload} | extra
    response = await client.post("/api/notifications/", json=body, headers=auth)
    assert response.status == 202, await response.text()
    return response.headers["Location"]


async def seed(client: Client, auth: dict[str, str]) -> dict[str, str]:
    """Deliveries on two channels in three bursts ten seconds apart (so throughput has a
    shape), retries, a refusal, and a dead letter that would succeed if replayed."""
    dead = {
        "flaky": await send(client, auth, "flaky1-gus@example.com", max_attempts=1),
        "refused": await send(client, auth, "reject-hal@example.com", max_attempts=1),
    }
    for burst in range(3):
        for i in range(4 + 3 * burst):
            await send(client, auth, f"user{burst}-{i}@example.com", priority=i % 4)
            await send(client, auth, f"slow-{burst}-{i}@example.com", priority=2)
            await send(client, auth, f"log:deploy {burst}.{i}", priority=3)
        await send(client, auth, f"flaky2-ivy{burst}@example.com")
        if burst < 2:
            await asyncio.sleep(10)
    for location in dead.values():
        await wait_for_status(client, auth, location, "failed")
    return dead


async def stat(page: Page, name: str) -> int:
    text = await page.locator(f'.stat[data-stat="{name}"] .value').inner_text()
    return int(text.replace(",", ""))


async def test_the_dashboard_shows_live_data_and_replays_a_dead_letter(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    smtp: ScriptedSmtp,
    start_worker: WorkerFactory,
    browser: tuple[BrowserContext, list[str]],
    tmp_path: Path,
) -> None:
    context, refused = browser
    operator = await TenantStore(pool).create(f"ops-{settings.key_prefix}", operator=True)
    auth = {"Authorization": f"Bearer {operator.api_key}"}
    worker = start_worker(
        msgspec.structs.replace(
            settings, smtp_port=smtp.port, worker_reclaim_interval_ms=50, retry_base_s=0.2
        )
    )
    # Given a running Pulse that has delivered, retried, refused and dead-lettered mail
    dead = await seed(client, auth)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    # When the dashboard is opened and given the key once
    await page.goto(str(client.make_url("/dashboard")))
    await page.fill("#key", operator.api_key)
    await page.click("#login-form button")

    # Then it shows live counts and draws its charts from the real data
    await expect(page.locator(".stat[data-stat=delivered] .value")).to_have_text(
        re.compile(r"^[1-9][\d,]*$"), timeout=WAIT_MS
    )
    await page.wait_for_selector("#throughput path[data-channel=email]", timeout=WAIT_MS)
    email_line = await page.get_attribute("#throughput path[data-channel=email]", "d")
    assert email_line is not None
    assert email_line.count("L") >= 11  # a point every 10 s, over two minutes at least
    assert await page.locator("#throughput path[data-channel=log]").count() == 1
    assert await page.locator("#latency rect[data-channel=email]").count() == 3
    assert await page.locator("#queue tbody tr").count() == 5
    assert await page.locator("#workers tbody tr .dot:not(.gone)").count() >= 1
    assert await page.locator('#breakers [data-provider="smtp"]').count() == 1
    await page.wait_for_selector("#failures tbody tr", timeout=WAIT_MS)
    assert "550" in await page.locator("#failures").inner_text()
    assert await page.locator("#dead-letters tbody tr").count() == 2
    assert await page.inner_text("#connection") == "live"

    # When a new notification is accepted, it shows in the counts with no reload
    before = await stat(page, "accepted")
    started = time.monotonic()
    await send(client, auth, "log:one more")
    await expect(page.locator(".stat[data-stat=accepted] .value")).to_have_text(
        f"{before + 1:,}", timeout=WAIT_MS
    )
    print(f"new notification counted on the page after {time.monotonic() - started:.2f} s")

    # When the dead letters are filtered to the temporary failure and replayed from the page
    await page.fill("#dl-error-class", "SMTP451")
    await page.click("#dl-filter button[type=submit]")
    await expect(page.locator("#dead-letters tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await page.click("#dl-replay")
    await expect(page.locator("#dl-status")).to_have_text("1 replayed", timeout=WAIT_MS)

    # Then that notification ends delivered, and the refused one stays dead
    replayed = await wait_for_status(client, auth, dead["flaky"], "delivered", "failed")
    assert replayed["status"] == "delivered"
    await page.fill("#dl-error-class", "")
    await page.click("#dl-filter button[type=submit]")
    await expect(page.locator("#dead-letters tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#dead-letters tbody")).to_contain_text("SMTP550")
    await expect(page.locator("#failures tbody tr")).to_have_count(1, timeout=WAIT_MS)

    # And a backlog shows per priority while no worker reads (for the screenshot too)
    await worker.shutdown()
    for i in range(30):
        await send(client, auth, f"later-{i}@example.com", priority=[1, 2, 2, 3, 4, 4][i % 6])
    await expect(page.locator('#queue tr[data-priority="4"] td').nth(1)).to_have_text(
        "10", timeout=WAIT_MS
    )
    shot = await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    if os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(shot)

    # And nothing went wrong in the page, and nothing left loopback
    assert problems == []
    assert refused == []
