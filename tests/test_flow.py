"""End to end in one process: HTTP accept -> PostgreSQL -> Redis Stream -> worker -> SMTP."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from pulse.devtools.smtp_sink import SmtpSink
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, Client, RunningWorker, wait_for_status

pytestmark = pytest.mark.integration


async def test_example_notification_is_mailed_and_audited(
    client: Client,
    auth: dict[str, str],
    worker: RunningWorker,
    smtp_sink: SmtpSink,
    pool: asyncpg.Pool,
) -> None:
    # Given a running worker and the seed body
    # When it is POSTed
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)

    # Then it is accepted and points at itself
    assert response.status == 202
    accepted = msgspec.json.decode(await response.read())
    assert accepted["status"] == "queued"
    location = response.headers["Location"]
    assert location == f"/api/notifications/{accepted['id']}"

    # And it ends delivered, the mail received with its subject and body
    document = await wait_for_status(client, auth, location, "delivered", "failed")
    assert document["status"] == "delivered"
    assert document["delivered_at"] is not None
    mails = [m for m in smtp_sink.messages() if m.message_id == f"<{accepted['id']}@pulse>"]
    assert len(mails) == 1
    assert mails[0].subject == "Hello"
    assert "Welcome to Pulse" in mails[0].text
    assert mails[0].rcpt_tos == ["someone@example.com"]

    # And the audit rows show queued, delivering, delivered in order
    rows = await pool.fetch(
        "SELECT status FROM audit WHERE notification_id = $1 ORDER BY id", accepted["id"]
    )
    assert [row["status"] for row in rows] == ["queued", "delivering", "delivered"]
    history = document["history"]
    assert isinstance(history, list)
    assert [h["status"] for h in history] == ["queued", "delivering", "delivered"]


async def test_other_tenant_sees_404_and_bad_keys_401(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    from pulse.store.tenants import TenantStore

    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    location = response.headers["Location"]
    other: NewTenant = await TenantStore(pool).create("other-" + location[-8:])

    foreign = await client.get(location, headers={"Authorization": f"Bearer {other.api_key}"})
    assert foreign.status == 404
    assert foreign.content_type == "application/problem+json"

    for headers in ({}, {"Authorization": "Bearer pk_wrong"}, {"Authorization": "Basic eDp5"}):
        denied = await client.get(location, headers=headers)
        assert denied.status == 401
        assert denied.content_type == "application/problem+json"
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")

    own = await client.get(location, headers=auth)
    assert own.status == 200
