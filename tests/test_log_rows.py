"""Audit rows and their notification (sql/023: no foreign key, a trigger deletes them with it):
an audit row written beside a concurrent delete of its notification does not outlive it."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from pulse.core.ids import uuid7
from pulse.store.notifications import PROVIDER_EVENT, NotificationStore

pytestmark = pytest.mark.integration


async def test_a_provider_event_racing_a_withdraw_leaves_no_audit_row(
    pool: asyncpg.Pool,
) -> None:
    # Given a queued notification
    tenant, notification = str(uuid7()), str(uuid7())
    await pool.execute(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant, f"t{secrets.token_hex(4)}"
    )
    await pool.execute(
        "INSERT INTO notifications (id, tenant_id, channel, recipient, payload, priority,"
        " status, max_attempts) VALUES ($1, $2, 'log', 'ops', '{}', 2, 'queued', 3)",
        notification, tenant,
    )  # fmt: skip
    # When a provider's report is being recorded while the API withdraws the notification
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(PROVIDER_EVENT, notification, "delivered", "handset")
        withdraw = asyncio.create_task(NotificationStore(pool).withdraw(notification))
        await asyncio.sleep(0)  # the DELETE is sent before the report commits
        await asyncio.wait({withdraw}, timeout=1)
    await withdraw

    # Then the notification is gone and no audit row of it is left behind
    assert (
        await pool.fetchval("SELECT count(*) FROM notifications WHERE id = $1", notification) == 0
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM audit WHERE notification_id = $1", notification)
        == 0
    )
