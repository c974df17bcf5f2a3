"""User tasks' streams in the queue snapshot, the Prometheus gauges and the dashboard's data,
apart from the notifications' own."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind, task_channel
from pulse.metrics import Metrics
from pulse.queue.keys import QueueKeys
from pulse.queue.publisher import Publisher
from pulse.queue.stats import QueueStats
from tests.conftest import log_job

pytestmark = pytest.mark.integration


def task_job(priority: int) -> Job:
    return Job(
        id=str(uuid7()), tenant_id="t", kind=JobKind.TASK, channel=task_channel("reports.build"),
        recipient="reports.build", payload={"args": {}}, priority=priority, max_attempts=3,
    )  # fmt: skip


async def test_task_streams_are_counted_apart_from_notifications(
    redis: Redis, keys: QueueKeys
) -> None:
    # Given three queued tasks on priority 2 and one notification on priority 1
    await Publisher(redis, keys).publish([task_job(2) for _ in range(3)] + [log_job(1)])
    # When an operator reads the snapshot and the gauges
    snapshot = await QueueStats(redis, keys).snapshot()
    metrics = Metrics()
    metrics.collect_queue_state().show(snapshot)
    text = metrics.exposition().decode()
    # Then the tasks are in the task streams only, unread, and exported as such
    assert [s.priority for s in snapshot.task_streams] == [0, 1, 2, 3, 4]
    assert (snapshot.task_streams[2].depth, snapshot.task_streams[2].lag) == (3, 3)
    assert snapshot.task_depth == 3
    assert snapshot.depth == 1
    assert snapshot.streams[2].depth == 0
    assert 'pulse_task_queue_depth{priority="2"} 3.0' in text
    assert 'pulse_queue_depth{priority="2"} 0.0' in text
    assert 'pulse_queue_depth{priority="1"} 1.0' in text
