"""``/api/schedules``: create, read, list, change, pause, resume, delete; each field checked
with a 422 that names it; scopes; one tenant never sees another's schedules."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.app import create_app
from pulse.metrics import Metrics
from pulse.store.tenants import TenantStore
from tests.conftest import EXAMPLE, Client
from tests.test_keys_and_scopes import new_key

pytestmark = pytest.mark.integration

LOG = {"recipient": "ops", "channel": "log", "payload": {"message": "daily digest"}}


async def answer(response: Any) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.json.decode(await response.read())
    return document


async def create(client: Client, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris", "notification": LOG} | fields
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 201, await response.text()
    document = await answer(response)
    assert response.headers["Location"] == f"/api/schedules/{document['id']}"
    return document


async def problem_at(client: Client, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post("/api/schedules", json=body, headers=auth)
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    document = await answer(response)
    pointer: str = document["errors"][0]["pointer"]
    return pointer


async def test_created_schedule_answers_its_next_five_fire_times_in_its_zone(
    client: Client, auth: dict[str, str]
) -> None:
    # Given a weekday 09:00 schedule in Paris
    created = await create(client, auth)
    # Then the answer carries the next five occurrences, RFC 3339 with Paris's offset
    times = [datetime.fromisoformat(t) for t in created["next_fire_times"]]
    assert len(times) == 5
    assert times == sorted(times)
    assert times[0] > datetime.now(UTC)
    for at in times:
        assert (at.hour, at.minute) == (9, 0)
        assert at.weekday() < 5
        assert at.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert created["misfire"] == "skip"
    assert created["catch_up_limit"] is None
    assert created["notification"]["channel"] == "log"
    assert created["paused"] is False
    # And a GET answers the same schedule
    fetched = await answer(await client.get(f"/api/schedules/{created['id']}", headers=auth))
    assert fetched["next_fire_times"] == created["next_fire_times"]
    assert fetched["cron"] == "0 9 * * MON-FRI"
    assert fetched["timezone"] == "Europe/Paris"


async def test_aliases_are_expanded(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth, cron="@daily", timezone="America/New_York")
    assert created["cron"] == "0 0 * * *"
    first = datetime.fromisoformat(created["next_fire_times"][0])
    assert (first.hour, first.minute) == (0, 0)


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"cron": "61 * * * *"}, "/cron"),
        ({"cron": "* * * *"}, "/cron"),
        ({"cron": "0 0 * * * *"}, "/cron"),
        ({"cron": "@fortnightly"}, "/cron"),
        ({"timezone": "Mars/Olympus"}, "/timezone"),
        ({"timezone": "../../etc/passwd"}, "/timezone"),
        ({"timezone": "America"}, "/timezone"),
        ({"timezone": "Etc"}, "/timezone"),
        ({"timezone": "US"}, "/timezone"),
        ({"notification": {**LOG, "channel": "pigeon"}}, "/notification/channel"),
        ({"notification": {**LOG, "payload": {}}}, "/notification/payload/message"),
        ({"notification": {**EXAMPLE, "recipient": "not-an-address"}}, "/notification/recipient"),
        (
            {"notification": {**LOG, "payload": {"message": "x", "n": 2**70}}},
            "/notification/payload/n",
        ),
        ({"notification": {**LOG, "priority": 9}}, "/notification/priority"),
        ({"notification": {**LOG, "delay_s": 30}}, "/notification/delay_s"),
        (
            {"notification": {**LOG, "send_at": "2027-01-01T00:00:00+00:00"}},
            "/notification/send_at",
        ),
        (
            {
                "notification": {
                    **LOG,
                    "deliver_in_window": {"tz": "UTC", "from": "03:00", "to": "04:00"},
                }
            },
            "/notification/deliver_in_window",
        ),
        ({"misfire": "later"}, "/misfire"),
        ({"catch_up_limit": 5}, "/catch_up_limit"),
        ({"misfire": "catch_up", "catch_up_limit": 0}, "/catch_up_limit"),
        ({"misfire": "catch_up", "catch_up_limit": 101}, "/catch_up_limit"),
        ({"starts_at": "2030-01-01T00:00:00"}, "/starts_at"),
        ({"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, "/ends_at"),
        ({"ends_at": "2020-01-01T00:00:00Z"}, "/ends_at"),
        ({"starts_at": "9999-12-31T23:59:59Z"}, "/starts_at"),
        ({"starts_at": "0001-01-01T00:00:00Z", "misfire": "catch_up"}, "/starts_at"),
        ({"starts_at": "0001-01-01T00:00:00+01:00"}, "/starts_at"),
        ({"ends_at": "9999-12-31T23:59:59-01:00"}, "/ends_at"),
        ({"extra": 1}, ""),
    ],
)
async def test_each_bad_field_is_a_422_naming_it(
    client: Client, auth: dict[str, str], fields: dict[str, Any], pointer: str
) -> None:
    body = {"cron": "0 9 * * *", "timezone": "Europe/Paris", "notification": LOG} | fields
    found = await problem_at(client, auth, body)
    assert found == pointer or (pointer == "" and found in ("", "/extra"))


async def test_nothing_bad_is_stored(client: Client, auth: dict[str, str]) -> None:
    await problem_at(
        client, auth, {"cron": "0 9 * * *", "timezone": "Nowhere", "notification": LOG}
    )
    listed = await answer(await client.get("/api/schedules", headers=auth))
    assert listed["items"] == []


async def test_list_pages_oldest_first(client: Client, auth: dict[str, str]) -> None:
    made = [(await create(client, auth, cron=f"{minute} 9 * * *"))["id"] for minute in range(3)]
    first = await answer(await client.get("/api/schedules?limit=2", headers=auth))
    assert [s["id"] for s in first["items"]] == made[:2]
    rest = await answer(
        await client.get(f"/api/schedules?limit=2&cursor={first['next_cursor']}", headers=auth)
    )
    assert [s["id"] for s in rest["items"]] == made[2:]
    assert rest["next_cursor"] is None
    assert (await client.get("/api/schedules?limit=0", headers=auth)).status == 422


async def test_update_changes_what_it_names_and_checks_it(
    client: Client, auth: dict[str, str]
) -> None:
    created = await create(client, auth)
    path = f"/api/schedules/{created['id']}"
    # When the expression and the policy change
    response = await client.patch(
        path, json={"cron": "30 18 * * *", "misfire": "catch_up", "catch_up_limit": 3}, headers=auth
    )
    changed = await answer(response)
    # Then the new times follow, the rest is kept
    assert response.status == 200, changed
    assert changed["cron"] == "30 18 * * *"
    assert changed["catch_up_limit"] == 3
    assert changed["notification"] == created["notification"]
    assert all(datetime.fromisoformat(t).hour == 18 for t in changed["next_fire_times"])
    # And a bad change is a 422 naming the field, leaving the schedule as it was
    bad = await client.patch(path, json={"timezone": "Atlantis/Capital"}, headers=auth)
    assert bad.status == 422
    assert (await answer(bad))["errors"][0]["pointer"] == "/timezone"
    folder = await client.patch(path, json={"timezone": "America"}, headers=auth)
    assert folder.status == 422
    assert (await answer(folder))["errors"][0]["pointer"] == "/timezone"
    bad_payload = await client.patch(
        path, json={"notification": {**LOG, "payload": {}}}, headers=auth
    )
    assert (await answer(bad_payload))["errors"][0]["pointer"] == "/notification/payload/message"
    again = await answer(await client.get(path, headers=auth))
    assert again["timezone"] == "Europe/Paris"
    assert again["cron"] == "30 18 * * *"
    # And an end can be set and cleared
    ends = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert (await answer(await client.patch(path, json={"ends_at": ends}, headers=auth)))["ends_at"]
    cleared = await answer(await client.patch(path, json={"ends_at": None}, headers=auth))
    assert cleared["ends_at"] is None


async def test_pause_resume_delete(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    path = f"/api/schedules/{created['id']}"
    paused = await answer(await client.post(f"{path}/pause", headers=auth))
    assert paused["paused"] is True
    assert (await answer(await client.get(path, headers=auth)))["paused"] is True
    resumed = await answer(await client.post(f"{path}/resume", headers=auth))
    assert resumed["paused"] is False
    assert len(resumed["next_fire_times"]) == 5
    assert (await client.delete(path, headers=auth)).status == 204
    assert (await client.get(path, headers=auth)).status == 404
    assert (await client.delete(path, headers=auth)).status == 404


async def test_a_tenant_never_sees_nor_edits_another_tenants_schedules(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Given a schedule of another tenant
    other = await TenantStore(pool).create(f"other-{secrets.token_hex(4)}")
    theirs = await create(client, {"Authorization": f"Bearer {other.api_key}"})
    path = f"/api/schedules/{theirs['id']}"
    # Then to this tenant it does not exist, whatever it tries
    assert (await client.get(path, headers=auth)).status == 404
    assert (await client.patch(path, json={"cron": "@hourly"}, headers=auth)).status == 404
    assert (await client.post(f"{path}/pause", headers=auth)).status == 404
    assert (await client.post(f"{path}/resume", headers=auth)).status == 404
    assert (await client.delete(path, headers=auth)).status == 404
    assert (await answer(await client.get("/api/schedules", headers=auth)))["items"] == []
    assert (await client.get("/api/schedules/not-a-uuid", headers=auth)).status == 404
    # And the owner still has it as it was
    owner = {"Authorization": f"Bearer {other.api_key}"}
    kept = await answer(await client.get(path, headers=owner))
    assert kept["cron"] == theirs["cron"]
    assert kept["paused"] is False


async def test_scopes(client: Client, auth: dict[str, str]) -> None:
    created = await create(client, auth)
    path = f"/api/schedules/{created['id']}"
    reader = await new_key(client, auth, "read")
    sender = await new_key(client, auth, "send")
    assert (await client.get(path, headers=reader)).status == 200
    assert (await client.get("/api/schedules", headers=reader)).status == 200
    for response in (
        await client.post(
            "/api/schedules", json={"cron": "@daily", "notification": LOG}, headers=reader
        ),
        await client.patch(path, json={"cron": "@hourly"}, headers=reader),
        await client.post(f"{path}/pause", headers=reader),
        await client.delete(path, headers=reader),
    ):
        assert response.status == 403
    assert (await client.post(f"{path}/pause", headers=sender)).status == 200
    assert (await client.get(path, headers=sender)).status == 403


async def test_the_openapi_document_lists_the_schedules_api(client: Client) -> None:
    spec = await answer(await client.get("/openapi.json"))
    assert {"post", "get"} <= set(spec["paths"]["/api/schedules"])
    assert {"get", "patch", "delete"} <= set(spec["paths"]["/api/schedules/{id}"])
    assert "post" in spec["paths"]["/api/schedules/{id}/pause"]
    assert "post" in spec["paths"]["/api/schedules/{id}/resume"]
    request = spec["components"]["schemas"]["ScheduleRequest"]
    assert "cron" in request["required"]  # and one of notification or job
    assert {"notification", "job"} <= set(request["properties"])


async def test_a_tenant_holds_at_most_its_share_of_schedules(
    settings: Settings, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    # Given a deployment that lets a tenant hold 3 schedules (PULSE_MAX_SCHEDULES_PER_TENANT)
    bounded = msgspec.structs.replace(settings, max_schedules_per_tenant=3)
    app = create_app(bounded, channel_specs(bounded), Metrics())
    async with TestClient(TestServer(app)) as client:
        made = [await create(client, auth, cron=f"{minute} 9 * * *") for minute in range(3)]
        # When it creates a fourth: 409, and nothing stored
        body = {"cron": "0 10 * * *", "notification": LOG}
        over = await client.post("/api/schedules", json=body, headers=auth)
        assert over.status == 409, await over.text()
        assert over.content_type == "application/problem+json"
        assert "PULSE_MAX_SCHEDULES_PER_TENANT" in (await answer(over))["detail"]
        listed = await answer(await client.get("/api/schedules", headers=auth))
        assert [s["id"] for s in listed["items"]] == [s["id"] for s in made]
        # And another tenant still creates its own
        other = await TenantStore(pool).create(f"other-{secrets.token_hex(4)}")
        await create(client, {"Authorization": f"Bearer {other.api_key}"})
        # And after a delete, the tenant creates one again
        gone = await client.delete(f"/api/schedules/{made[0]['id']}", headers=auth)
        assert gone.status == 204
        await create(client, auth, cron="0 10 * * *")
