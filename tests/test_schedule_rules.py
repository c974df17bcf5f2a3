"""How edits move a schedule's cursor (pure): never back over what it has handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.http.schedule_rules import (
    Limits,
    SchedulePatch,
    ScheduleRequest,
    edited,
    new_schedule,
    resumed,
)
from pulse.http.validation import NotificationRequest

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)
LIMITS = Limits(specs=channel_specs(Settings()), max_depth=8, default_max_attempts=5)
LOG = NotificationRequest(recipient="ops", channel="log", payload={"message": "hi"})


def request(**fields: object) -> ScheduleRequest:
    return msgspec.structs.replace(ScheduleRequest(cron="* * * * *", notification=LOG), **fields)


def test_catch_up_from_a_past_start_counts_from_that_start_included() -> None:
    start = NOW.replace(second=0) - timedelta(hours=1)  # itself an occurrence
    schedule = new_schedule(request(misfire="catch_up", starts_at=start), "t", LIMITS, NOW)
    assert schedule.next_fire_at == start


def test_skip_from_a_past_start_counts_from_now() -> None:
    schedule = new_schedule(request(starts_at=NOW - timedelta(hours=1)), "t", LIMITS, NOW)
    assert schedule.cursor_at == NOW
    assert schedule.next_fire_at == NOW.replace(second=0) + timedelta(minutes=1)


def test_moving_the_start_back_never_fires_again_what_was_handled() -> None:
    # Given a catch-up schedule that has handled everything up to now
    schedule = msgspec.structs.replace(
        new_schedule(request(misfire="catch_up"), "t", LIMITS, NOW), cursor_at=NOW
    )
    # When its start is moved a day back
    later = NOW + timedelta(seconds=5)
    patch = SchedulePatch(starts_at=NOW - timedelta(days=1))
    moved = edited(schedule, patch, LIMITS, later)
    # Then its cursor stays where it was
    assert moved.cursor_at == NOW


def test_a_new_expression_counts_from_now_and_resume_skips_the_pause() -> None:
    schedule = new_schedule(request(), "t", LIMITS, NOW - timedelta(hours=2))
    changed = edited(schedule, SchedulePatch(cron="@hourly"), LIMITS, NOW)
    assert changed.cursor_at == NOW
    assert changed.next_fire_at == NOW.replace(minute=0, second=0) + timedelta(hours=1)
    paused = msgspec.structs.replace(schedule, paused=True)
    again = resumed(paused, NOW)
    assert again.paused is False
    assert again.cursor_at == NOW
