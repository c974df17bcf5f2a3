"""Bad input never yields a 500: each class gets its 4xx naming the field, writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from pulse.config import Settings
from pulse.queue.keys import QueueKeys
from pulse.store.tenants import NewTenant
from tests.conftest import EXAMPLE, Client
from tests.queue_view import waiting

pytestmark = pytest.mark.integration


def body_with(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(EXAMPLE))
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


def payload_with(**changes: Any) -> dict[str, Any]:
    payload = dict(EXAMPLE["payload"])  # type: ignore[call-overload]
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return body_with(payload=payload)


UNPROCESSABLE = [
    ("unknown channel", body_with(channel="pigeon"), "/channel"),
    ("missing recipient", body_with(recipient=None), "/recipient"),
    ("missing payload", body_with(payload=None), "/payload"),
    ("unknown top-level field", body_with(colour="blue"), "/colour"),
    ("priority of wrong type", body_with(priority="high"), "/priority"),
    ("priority out of range", body_with(priority=99), "/priority"),
    ("recipient not an address", body_with(recipient="not-an-address"), "/recipient"),
    ("recipient of wrong type", body_with(recipient=42), "/recipient"),
    ("missing subject", payload_with(subject=None), "/payload/subject"),
    ("missing body", payload_with(body=None), "/payload/body"),
    ("empty subject", payload_with(subject=""), "/payload/subject"),
    ("unknown payload field", payload_with(attachment="x"), "/payload/attachment"),
    ("body of wrong type", payload_with(body=["a"]), "/payload/body"),
    ("top level not an object", [EXAMPLE], ""),
]


async def written(pool: asyncpg.Pool, redis: Redis, settings: Settings, tenant: NewTenant) -> int:
    rows: int = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant.tenant_id
    )
    entries = await waiting(redis, QueueKeys(settings.key_prefix))  # whichever lane
    return rows + len(entries)


@pytest.mark.parametrize(
    ("case", "body", "pointer"), UNPROCESSABLE, ids=[c[0] for c in UNPROCESSABLE]
)
async def test_invalid_fields_answer_422_naming_the_field(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
    case: str,
    body: Any,
    pointer: str,
) -> None:
    response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 422, case
    assert response.content_type == "application/problem+json"
    problem = msgspec.json.decode(await response.read())
    assert problem["status"] == 422
    assert problem["errors"][0]["pointer"] == pointer
    assert problem["detail"]
    assert await written(pool, redis, settings, tenant) == 0


async def test_invalid_json_answers_400(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
) -> None:
    headers = auth | {"Content-Type": "application/json"}
    response = await client.post("/api/notifications/", data=b'{"recipient": ', headers=headers)

    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert "JSON" in msgspec.json.decode(await response.read())["detail"]
    assert await written(pool, redis, settings, tenant) == 0


async def test_wrong_content_type_answers_415(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
) -> None:
    data = msgspec.json.encode(EXAMPLE)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        headers = auth | {"Content-Type": content_type}
        response = await client.post("/api/notifications/", data=data, headers=headers)
        assert response.status == 415
        assert response.content_type == "application/problem+json"
    assert await written(pool, redis, settings, tenant) == 0


async def test_oversized_body_answers_413(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
) -> None:
    huge = payload_with(body="x" * (settings.max_body_bytes + 1))

    response = await client.post("/api/notifications/", json=huge, headers=auth)

    assert response.status == 413
    assert response.content_type == "application/problem+json"
    assert await written(pool, redis, settings, tenant) == 0


async def test_unknown_route_and_method_are_problems(client: Client, auth: dict[str, str]) -> None:
    missing = await client.get("/api/nothing-here", headers=auth)
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"

    wrong_method = await client.delete("/api/notifications/", headers=auth)
    assert wrong_method.status == 405
    assert wrong_method.content_type == "application/problem+json"
    assert "POST" in wrong_method.headers["Allow"]

    not_an_id = await client.get("/api/notifications/not-a-uuid", headers=auth)
    assert not_an_id.status == 404
    assert not_an_id.content_type == "application/problem+json"


async def test_accepted_notification_is_committed_with_its_audit_row(
    client: Client, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    response = await client.post("/api/notifications/", json=EXAMPLE, headers=auth)
    assert response.status == 202
    accepted = msgspec.json.decode(await response.read())

    row = await pool.fetchrow(
        "SELECT status, priority FROM notifications WHERE id = $1", accepted["id"]
    )
    assert row is not None
    assert (row["status"], row["priority"]) == ("queued", 1)
    audit = await pool.fetch("SELECT status FROM audit WHERE notification_id = $1", accepted["id"])
    assert [a["status"] for a in audit] == ["queued"]


async def test_values_postgresql_cannot_store_are_422_not_500(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
) -> None:
    body = payload_with(body="nul \u0000 inside")

    response = await client.post("/api/notifications/", json=body, headers=auth)

    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert await written(pool, redis, settings, tenant) == 0


@pytest.mark.parametrize("levels", [9, 30_000])
async def test_payload_nested_too_deeply_is_422(
    client: Client,
    auth: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    tenant: NewTenant,
    levels: int,
) -> None:
    nested = b"[" * levels + b"]" * levels
    body = (
        b'{"recipient": "a@example.com", "channel": "log",'
        b' "payload": {"message": "m", "data": {"x": ' + nested + b"}}}"
    )
    headers = auth | {"Content-Type": "application/json"}

    response = await client.post("/api/notifications/", data=body, headers=headers)

    assert response.status == 422
    assert msgspec.json.decode(await response.read())["errors"][0]["pointer"] == "/payload"
    assert await written(pool, redis, settings, tenant) == 0


async def test_request_ids_are_echoed_and_cors_is_off_by_default(
    client: Client, auth: dict[str, str]
) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert given.headers["X-Request-ID"] == "trace-123"
    made = await client.get("/api/nothing", headers=auth)
    assert len(made.headers["X-Request-ID"]) == 32

    cross = await client.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in cross.headers
