"""The dashboard's page and data as a tenant, another tenant and an operator see them, through
the real app on real Redis and PostgreSQL with a real worker and SMTP server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.devtools.smtp_sink import SmtpSink
from pulse.http.app import create_app
from pulse.http.dashboard import DEV_MAIL, DevInbox
from pulse.metrics import Metrics
from pulse.store.tenants import TenantStore
from tests.conftest import EXAMPLE, Client, RunningWorker, WorkerFactory, wait_for_status
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.integration
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML namespace name, never fetched


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


@pytest.fixture
async def scripted_worker(
    settings: Settings, smtp: ScriptedSmtp, start_worker: WorkerFactory
) -> RunningWorker:
    return start_worker(msgspec.structs.replace(settings, smtp_port=smtp.port))


async def snapshot(client: Client, headers: dict[str, str]) -> Any:
    response = await client.get("/api/dashboard", headers=headers)
    assert response.status == 200, await response.text()
    return msgspec.json.decode(await response.read())


async def send(client: Client, headers: dict[str, str], recipient: str, **extra: Any) -> str:
    body = EXAMPLE | {"recipient": recipient} | extra
    response = await client.post("/api/notifications/", json=body, headers=headers)
    assert response.status == 202, await response.text()
    return response.headers["Location"]


async def test_the_page_and_its_assets_come_from_pulse_alone(client: Client) -> None:
    # When a browser opens /dashboard
    page = await client.get("/dashboard")
    html = await page.text()

    # Then it is a page whose policy allows nothing from elsewhere
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    # And every asset it names is served by Pulse, and none names another host
    assets = re.findall(r'(?:src|href)="(/dashboard/assets/[^"]+)"', html)
    assert sorted(assets) == ["/dashboard/assets/dashboard.css", "/dashboard/assets/dashboard.js"]
    bodies = [html]
    for asset in assets:
        response = await client.get(asset)
        assert response.status == 200
        bodies.append(await response.text())
    urls = {url for body in bodies for url in re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'`)]*", body)}
    assert urls <= {SVG_NAMESPACE}


async def test_the_data_needs_a_read_or_admin_key(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    tenants = TenantStore(pool)
    tenant_id = await tenants.authenticate(auth["Authorization"].split()[1])
    assert tenant_id is not None
    _, send_only = await tenants.add_key(tenant_id, ["send"], "sender")
    _, read_only = await tenants.add_key(tenant_id, ["read"], "viewer")

    anonymous = await client.get("/api/dashboard/events")
    assert anonymous.status == 401
    assert anonymous.content_type == "application/problem+json"
    refused = await client.get("/api/dashboard", headers={"Authorization": f"Bearer {send_only}"})
    assert refused.status == 403
    assert "'read' or 'admin'" in (await refused.json())["detail"]
    viewer = await snapshot(client, {"Authorization": f"Bearer {read_only}"})
    assert viewer["viewer"] == {"scopes": ["read"], "operator": False}


async def test_a_tenant_sees_its_own_flow_and_nothing_of_another(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    scripted_worker: RunningWorker,
) -> None:
    # Given a tenant whose mails are delivered, retried and refused
    delivered = await send(client, auth, "ann@example.com")
    refused = await send(client, auth, "reject-bob@example.com", max_attempts=1)
    await wait_for_status(client, auth, delivered, "delivered")
    await wait_for_status(client, auth, refused, "failed")
    other = await TenantStore(pool).create(f"other-{delivered[-8:]}")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}

    # When each looks at the dashboard
    mine = await snapshot(client, auth)
    theirs = await snapshot(client, other_auth)

    # Then the tenant sees its counts, throughput, latency, failure and dead letter
    assert mine["statuses"] == {"delivered": 1, "failed": 1}
    delivered_points = [p for p in mine["throughput"] if p["kind"] == "delivered"]
    assert sum(p["count"] for p in delivered_points) == 1
    assert [row["channel"] for row in mine["latency"]] == ["email"]
    assert 0 < mine["latency"][0]["p50_ms"] <= mine["latency"][0]["p99_ms"]
    [failure] = mine["failures"]
    assert failure["recipient"] == "reject-bob@example.com"
    assert "550" in failure["error"]
    assert mine["dead_letters"] == 1
    smtp_breaker = next(b for b in mine["breakers"] if b["provider"] == "smtp")
    assert (smtp_breaker["calls"], smtp_breaker["failures"]) == (2, 1)
    # And the other tenant sees none of it
    assert theirs["statuses"] == {}
    assert theirs["throughput"] == []
    assert theirs["failures"] == []
    assert theirs["dead_letters"] == 0
    assert all(b["calls"] == 0 and b["last_error"] is None for b in theirs["breakers"])


async def test_workers_are_named_for_operators_only(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    scripted_worker: RunningWorker,
) -> None:
    await wait_for_status(client, auth, await send(client, auth, "cy@example.com"), "delivered")
    suffix = auth["Authorization"][-6:]
    operator = await TenantStore(pool).create(f"operator-{suffix}", operator=True)
    name = scripted_worker.worker.consumer.name

    as_operator = await snapshot(client, {"Authorization": f"Bearer {operator.api_key}"})
    as_tenant = await snapshot(client, auth)

    assert name in [w["name"] for w in as_operator["workers"]]
    assert as_operator["queue_dead_letters"] == 0
    names = [w["name"] for w in as_tenant["workers"]]
    assert name not in names
    assert all(re.fullmatch(r"worker \d+", n) for n in names)
    assert any(w["live"] for w in as_tenant["workers"])
    assert as_tenant["queue_dead_letters"] is None
    assert [q["priority"] for q in as_tenant["queue"]] == [0, 1, 2, 3, 4]


async def read_events(response: Any) -> Any:
    """Yield each snapshot the stream sends (SSE: blocks split by a blank line)."""
    buffer = b""
    while True:
        chunk = await response.content.readany()
        assert chunk, "the stream ended"
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if fields.get(b"event") == b"snapshot":
                yield msgspec.json.decode(fields[b"data"])


async def test_the_event_stream_carries_a_new_notification(
    client: Client, auth: dict[str, str]
) -> None:
    # Given an open event stream
    response = await client.get("/api/dashboard/events", headers=auth)
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    events = read_events(response)
    first = await anext(events)
    assert sum(first["statuses"].values()) == 0

    # When a notification is accepted
    await send(client, auth, "dee@example.com")

    # Then a later event counts it, without a new request
    for _ in range(30):
        later = await asyncio.wait_for(anext(events), 10)
        if sum(later["statuses"].values()) == 1:
            break
    else:
        raise AssertionError("the stream never counted the new notification")
    assert later["queue"][1]["depth"] == 1  # priority 1, no worker running
    response.close()


async def test_the_mail_page_exists_only_when_pulse_dev_connects_it(
    settings: Settings, auth: dict[str, str], start_worker: WorkerFactory
) -> None:
    # Given the app with no inbox connected (pulse api)
    app = create_app(settings, channel_specs(settings), Metrics())
    inbox = DevInbox()
    async with TestClient(TestServer(app)) as client:
        missing = await client.get("/dev/mail")
        assert missing.status == 404
        assert missing.content_type == "application/problem+json"

        # When pulse dev connects the sink's inbox and a mail goes through the real sink
        app[DEV_MAIL].connect(inbox)
        with SmtpSink(on_message=inbox.record) as sink:
            start_worker(msgspec.structs.replace(settings, smtp_port=sink.port))
            subject = "<b>Hello</b> & welcome"
            location = await send(
                client, auth, "eve@example.com", payload={"subject": subject, "body": "Hi"}
            )
            await wait_for_status(client, auth, location, "delivered")

        # Then the page lists it, escaped, and so does its JSON twin
        page = await client.get("/dev/mail")
        text = await page.text()
        assert page.status == 200
        assert "eve@example.com" in text
        assert "&lt;b&gt;Hello&lt;/b&gt; &amp; welcome" in text
        listing = await (await client.get("/dev/mail.json")).json()
        assert [(m["to"], m["subject"]) for m in listing["mails"]] == [
            (["eve@example.com"], subject)
        ]


async def all_events(response: Any) -> Any:
    """Yield every (event, data) the stream sends, then None when it ends."""
    buffer = b""
    while chunk := await response.content.readany():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"event" in fields:
                yield fields[b"event"].decode(), fields.get(b"data", b"")
    yield None


async def test_a_revoked_key_gets_no_more_snapshots_on_its_open_stream(
    client: Client, auth: dict[str, str]
) -> None:
    # Given: a read key watching the live stream
    created = await client.post(
        "/api/keys", json={"name": "watcher", "scopes": ["read"]}, headers=auth
    )
    key = msgspec.json.decode(await created.read())
    response = await client.get(
        "/api/dashboard/events", headers={"Authorization": f"Bearer {key['api_key']}"}
    )
    events = all_events(response)
    assert (await asyncio.wait_for(anext(events), 10))[0] == "snapshot"

    # When: the key is revoked
    revoked = await client.delete(f"/api/keys/{key['id']}", headers=auth)
    assert revoked.status == 204

    # Then: the stream says so and ends (one snapshot may have been on its way already)
    seen = []
    while (event := await asyncio.wait_for(anext(events), 10)) is not None:
        seen.append(event[0])
        assert seen.count("snapshot") <= 1, "snapshots keep coming after the revocation"
    assert seen[-1] == "revoked"


async def test_the_mail_page_answers_only_to_a_loopback_host_name(
    settings: Settings, auth: dict[str, str]
) -> None:
    # Given: pulse dev's mail page
    app = create_app(settings, channel_specs(settings), Metrics())
    async with TestClient(TestServer(app)) as client:
        app[DEV_MAIL].connect(DevInbox())

        # When: a page elsewhere reaches it through a name rebound to loopback
        rebound = await client.get("/dev/mail.json", headers={"Host": "attacker.example:8000"})
        local = await client.get("/dev/mail.json", headers={"Host": "localhost:8000"})

    # Then: refused; the developer's own browser still gets it
    assert rebound.status == 403
    assert local.status == 200


async def test_the_event_stream_echoes_the_request_id(client: Client, auth: dict[str, str]) -> None:
    response = await client.get(
        "/api/dashboard/events", headers=auth | {"X-Request-ID": "mine-123"}
    )

    assert response.headers.get("X-Request-ID") == "mine-123"
    response.close()


async def test_a_tenant_sees_its_own_backlog_not_another_tenants(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Given no worker running, another tenant with three queued at priority 3 and ours with one
    suffix = auth["Authorization"][-6:]
    other = await TenantStore(pool).create(f"other-{suffix}")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}
    operator = await TenantStore(pool).create(f"operator-{suffix}", operator=True)
    for i in range(3):
        await send(client, other_auth, f"o{i}@example.com", priority=3)
    await send(client, auth, "mine@example.com", priority=3)

    # When each reads the dashboard
    ours = await snapshot(client, auth)
    theirs = await snapshot(client, other_auth)
    everyone = await snapshot(client, {"Authorization": f"Bearer {operator.api_key}"})

    # Then a tenant's queue counts its own only; the operator's counts all
    assert ours["queue"][3]["depth"] == 1
    assert theirs["queue"][3]["depth"] == 3
    assert everyone["queue"][3]["depth"] == 4
    assert ours["task_queue"] == []
