"""Dates at the ends of what a datetime can hold (years 1 and 9999, any offset): a schedule's
``starts_at``/``ends_at`` and a notification's ``send_at`` are accepted or refused with a 422
naming the field; never an overflow (a 500)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import settings as profile
from hypothesis import strategies as st

from pulse.channels.registry import channel_specs
from pulse.config import Settings
from pulse.core.errors import InvalidInput
from pulse.core.schedule import DeliveryWindow, due_time
from pulse.http.schedule_rules import (
    Limits,
    SchedulePatch,
    ScheduleRequest,
    document,
    edited,
    new_schedule,
)
from pulse.http.validation import NotificationRequest

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)
LIMITS = Limits(specs=channel_specs(Settings()), max_depth=8, default_max_attempts=5)
LOG = NotificationRequest(recipient="ops", channel="log", payload={"message": "hi"})
YEAR_S = 365 * 86_400.0
LATEST = datetime(9999, 12, 31, 23, 59, 59)
EARLIEST = datetime(1, 1, 1)

offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(lambda delta: timezone(timedelta(minutes=delta // timedelta(minutes=1))))
instants = st.one_of(
    st.datetimes(min_value=EARLIEST, max_value=EARLIEST + timedelta(days=3), timezones=offsets),
    st.datetimes(min_value=LATEST - timedelta(days=3), max_value=LATEST, timezones=offsets),
    st.datetimes(timezones=offsets),
)
PROFILE = profile(max_examples=300, deadline=None, derandomize=True, database=None)
EXTREMES = [
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=1))),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
]


def refused_at(call: object, *pointers: str) -> bool:
    """``call()`` answers (False), or refuses with a 422 naming one of ``pointers`` (True)."""
    assert callable(call)
    pointer = None
    try:
        call()
    except InvalidInput as exc:
        pointer = exc.pointer
    assert pointer is None or pointer in pointers, pointer
    return pointer is not None


@pytest.mark.parametrize("at", EXTREMES)
@pytest.mark.parametrize("misfire", ["skip", "catch_up"])
def test_extreme_starts_are_refused_naming_starts_at(at: datetime, misfire: str) -> None:
    body = ScheduleRequest(cron="* * * * *", notification=LOG, starts_at=at, misfire=misfire)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as caught:
        new_schedule(body, "t", LIMITS, NOW)
    assert caught.value.pointer == "$.starts_at"


@pytest.mark.parametrize("at", EXTREMES)
def test_extreme_ends_are_refused_naming_ends_at(at: datetime) -> None:
    body = ScheduleRequest(cron="* * * * *", notification=LOG, ends_at=at)
    with pytest.raises(InvalidInput) as caught:
        new_schedule(body, "t", LIMITS, NOW)
    assert caught.value.pointer == "$.ends_at"


@PROFILE
@given(
    starts=st.none() | instants,
    ends=st.none() | instants,
    misfire=st.sampled_from(["skip", "catch_up"]),
    cron=st.sampled_from(["* * * * *", "0 0 1 1 *", "0 0 29 2 *", "@hourly"]),
    zone=st.sampled_from(["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Paris"]),
)
@example(starts=EXTREMES[0], ends=None, misfire="skip", cron="* * * * *", zone="UTC")
@example(starts=EXTREMES[2], ends=None, misfire="catch_up", cron="* * * * *", zone="UTC")
@example(  # a window wholly in the past: catch_up once found occurrences there and accepted it
    starts=datetime(1999, 1, 1, tzinfo=UTC), ends=datetime(2000, 1, 1, tzinfo=UTC),
    misfire="catch_up", cron="* * * * *", zone="UTC",
)  # fmt: skip
def test_any_start_and_end_is_a_schedule_or_a_422_naming_them(
    starts: datetime | None, ends: datetime | None, misfire: str, cron: str, zone: str
) -> None:
    body = ScheduleRequest(
        cron=cron, timezone=zone, notification=LOG, starts_at=starts, ends_at=ends,
        misfire=misfire,  # type: ignore[arg-type]
    )  # fmt: skip
    if refused_at(lambda: new_schedule(body, "t", LIMITS, NOW), "$.starts_at", "$.ends_at"):
        return
    schedule = new_schedule(body, "t", LIMITS, NOW)
    # Accepted: it answers its next fire times, and an edit to other extremes answers too
    assert document(schedule, NOW).next_fire_times
    for patch in (SchedulePatch(starts_at=starts), SchedulePatch(ends_at=ends)):
        refused_at(lambda patch=patch: document(edited(schedule, patch, LIMITS, NOW), NOW),
                   "$.starts_at", "$.ends_at")  # fmt: skip


@PROFILE
@given(send_at=instants, windowed=st.booleans())
@example(send_at=EXTREMES[1], windowed=False)
@example(send_at=EXTREMES[3], windowed=True)
def test_any_send_at_is_a_due_time_or_a_422_naming_it(send_at: datetime, windowed: bool) -> None:
    window = (
        msgspec.convert(
            {"tz": "Pacific/Kiritimati", "from": "08:00", "to": "09:00"}, DeliveryWindow
        )
        if windowed
        else None
    )
    refused_at(lambda: due_time(NOW, send_at, None, window, YEAR_S, "$"), "$.send_at")
