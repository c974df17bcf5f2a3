"""Ingress rate limits apply to tasks as to notifications: ``/api/jobs``, its batches and groups
(each counting its jobs) are admitted by the tenant's and key's limits."""

from __future__ import annotations

from typing import Any

import pytest

from pulse.store.tenants import NewTenant
from tests.conftest import Client, RunningWorker
from tests.test_ingress_limits import operator, parse_list, set_limits  # noqa: F401  (fixture)
from tests.test_task_flows import task_worker  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

ADD = {"task": "example.add", "args": {"a": 1, "b": 2}}


async def test_jobs_batches_and_groups_are_admitted_by_the_ingress_limits(
    client: Client,
    operator: dict[str, str],  # noqa: F811
    tenant: NewTenant,
    auth: dict[str, str],
    task_worker: RunningWorker,  # noqa: F811
) -> None:
    async def post(path: str, body: Any) -> Any:
        return await client.post(path, json=body, headers=auth)

    # Given a tenant limited to a burst of 3 (then one per 100 s)
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=3)
    # When it enqueues 4 jobs one by one
    answers = [await post("/api/jobs/", ADD) for _ in range(4)]
    # Then 3 are accepted, telling what remains, and the 4th is a 429 with Retry-After
    assert [a.status for a in answers] == [202, 202, 202, 429]
    assert parse_list(answers[2].headers["RateLimit"])["tenant"]["r"] == 0
    assert int(answers[3].headers["Retry-After"]) > 0
    # And under a burst of 4, a batch counts its jobs: 3 fit, all at once
    await set_limits(client, operator, tenant.tenant_id, rate_per_s=0.01, burst=4)
    assert (await post("/api/jobs/batch", {"items": [ADD] * 3})).status == 202
    # And a group counts its members and its callback: 2 do not fit in the 1 left, 1 does
    group = {"jobs": [ADD], "then": ADD}
    assert (await post("/api/jobs/group", group)).status == 429
    assert (await post("/api/jobs/group", {"jobs": [ADD]})).status == 202
    # And a batch larger than the whole burst could never pass: 422, not a 429 to retry
    never = await post("/api/jobs/batch", {"items": [ADD] * 5})
    assert never.status == 422
    assert (await never.json())["errors"][0]["pointer"] == "/items"
    listed = await (await client.get("/api/jobs/?limit=100", headers=auth)).json()
    assert len(listed["items"]) == 3 + 3 + 1
