"""The Python client schedules, reschedules and lists by due time against a real `pulse api`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pulse.client import AsyncPulseClient, PulseAPIError
from pulse.store.tenants import NewTenant

pytestmark = pytest.mark.system


async def test_client_schedules_and_reschedules(live_api: str, tenant: NewTenant) -> None:
    async with AsyncPulseClient(live_api, tenant.api_key) as pulse:
        # Given a notification scheduled an hour ahead
        due = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        accepted = await pulse.send("ops", "log", {"message": "later"}, send_at=due)
        assert (accepted.status, accepted.send_at) == ("scheduled", due.isoformat())
        # When it is moved a day later
        moved = await pulse.reschedule(accepted.id, delay_s=86_400)
        # Then the view says so, and the list finds it by due time
        assert moved.status == "scheduled"
        assert moved.send_at is not None
        assert moved.send_at > due + timedelta(hours=20)
        after = (due + timedelta(hours=20)).isoformat().replace("+00:00", "Z")
        listed = await pulse.list(status="scheduled", due_after=after)
        assert [item.id for item in listed.items] == [accepted.id]
        # and once cancelled it can no longer be rescheduled
        await pulse.cancel(accepted.id)
        with pytest.raises(PulseAPIError) as caught:
            await pulse.reschedule(accepted.id, delay_s=5)
        assert caught.value.status == 409
        # and quiet hours in an unknown zone are refused naming the field
        window = {"tz": "Nowhere/Else", "from": "08:00", "to": "21:00"}
        with pytest.raises(PulseAPIError) as refused:
            await pulse.send("ops", "log", {"message": "x"}, deliver_in_window=window)
        assert refused.value.problem["errors"][0]["pointer"] == "/deliver_in_window/tz"
