"""Due times and quiet hours (pure): send_at / delay_s, the bound, windows across midnight and
DST gaps and overlaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from pulse.core.errors import InvalidInput
from pulse.core.schedule import DeliveryWindow, due_time, local_window, next_in_window

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
YEAR = 365 * 86_400.0


def window(tz: str, start: str, end: str) -> DeliveryWindow:
    return msgspec.convert({"tz": tz, "from": start, "to": end}, DeliveryWindow)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_future_send_at_is_due_then_in_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    send_at = datetime(2026, 6, 1, 16, 30, tzinfo=paris_summer)
    assert due_time(NOW, send_at, None, None, YEAR) == utc(2026, 6, 1, 14, 30)


def test_past_or_now_means_at_once() -> None:
    assert due_time(NOW, NOW, None, None, YEAR) is None
    assert due_time(NOW, NOW - timedelta(days=3), None, None, YEAR) is None
    assert due_time(NOW, None, 0, None, YEAR) is None
    assert due_time(NOW, None, None, None, YEAR) is None


def test_delay_counts_from_now() -> None:
    assert due_time(NOW, None, 90, None, YEAR) == NOW + timedelta(seconds=90)


def test_both_send_at_and_delay_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        due_time(NOW, NOW + timedelta(hours=1), 5, None, YEAR)
    assert caught.value.pointer == "$.delay_s"


@pytest.mark.parametrize(
    ("send_at", "delay_s", "field"),
    [(NOW + timedelta(days=366), None, "send_at"), (None, 400 * 86_400.0, "delay_s"),
     (None, float("inf"), "delay_s"), (None, 1e300, "delay_s")],
)  # fmt: skip
def test_beyond_the_bound_is_refused_naming_the_field(
    send_at: datetime | None, delay_s: float | None, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        due_time(NOW, send_at, delay_s, None, YEAR, where="$.items[3]")
    assert caught.value.pointer == f"$.items[3].{field}"


def test_unknown_zone_is_refused_naming_the_field() -> None:
    for zone in ("Mars/Olympus", "../../etc/passwd", "/usr/share/zoneinfo/UTC", "America", "Etc"):
        with pytest.raises(InvalidInput) as caught:
            local_window(window(zone, "08:00", "21:00"))
        assert caught.value.pointer == "$.deliver_in_window.tz"


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        local_window(window("UTC", "08:00", "08:00"))
    assert caught.value.pointer == "$.deliver_in_window.to"


def test_malformed_clock_times_do_not_decode() -> None:
    for bad in ("8:00", "25:00", "12:60", "noon"):
        with pytest.raises(msgspec.ValidationError):
            window("UTC", bad, "21:00")


def test_inside_the_window_is_sent_as_asked() -> None:
    paris = local_window(window("Europe/Paris", "08:00", "21:00"))
    at = utc(2026, 6, 1, 12, 0)  # 14:00 in Paris
    assert next_in_window(at, paris) == at


def test_before_the_window_waits_for_its_opening_the_same_day() -> None:
    paris = local_window(window("Europe/Paris", "08:00", "21:00"))
    assert next_in_window(utc(2026, 6, 1, 3, 0), paris) == utc(2026, 6, 1, 6, 0)


def test_after_the_window_waits_for_the_next_day() -> None:
    paris = local_window(window("Europe/Paris", "08:00", "21:00"))
    assert next_in_window(utc(2026, 6, 1, 19, 0), paris) == utc(2026, 6, 2, 6, 0)


def test_a_window_across_midnight() -> None:
    night = local_window(window("UTC", "22:00", "06:00"))
    assert next_in_window(utc(2026, 6, 1, 23, 0), night) == utc(2026, 6, 1, 23, 0)
    assert next_in_window(utc(2026, 6, 2, 3, 0), night) == utc(2026, 6, 2, 3, 0)
    assert next_in_window(utc(2026, 6, 2, 6, 0), night) == utc(2026, 6, 2, 22, 0)
    assert next_in_window(utc(2026, 6, 2, 12, 0), night) == utc(2026, 6, 2, 22, 0)


def test_a_window_to_midnight() -> None:
    evening = local_window(window("UTC", "18:00", "24:00"))
    assert next_in_window(utc(2026, 6, 1, 23, 59), evening) == utc(2026, 6, 1, 23, 59)
    assert next_in_window(utc(2026, 6, 2, 0, 0), evening) == utc(2026, 6, 2, 18, 0)


def test_dst_spring_forward_keeps_the_local_opening_time() -> None:
    # Paris moves from +01:00 to +02:00 on 2026-03-29: 08:00 local is 07:00Z the day before
    # and 06:00Z that day.
    paris = local_window(window("Europe/Paris", "08:00", "21:00"))
    assert next_in_window(utc(2026, 3, 28, 2, 0), paris) == utc(2026, 3, 28, 7, 0)
    assert next_in_window(utc(2026, 3, 29, 2, 0), paris) == utc(2026, 3, 29, 6, 0)


def test_an_opening_in_the_dst_gap_opens_when_the_clocks_jump() -> None:
    # 02:30 does not exist in Paris on 2026-03-29 (02:00 -> 03:00 at 01:00Z).
    paris = local_window(window("Europe/Paris", "02:30", "05:00"))
    assert next_in_window(utc(2026, 3, 28, 23, 0), paris) == utc(2026, 3, 29, 1, 0)


def test_an_opening_in_the_repeated_hour_opens_at_its_first_occurrence() -> None:
    # 02:30 happens twice in Paris on 2026-10-25 (03:00 +02:00 -> 02:00 +01:00 at 01:00Z).
    paris = local_window(window("Europe/Paris", "02:30", "05:00"))
    assert next_in_window(utc(2026, 10, 24, 22, 0), paris) == utc(2026, 10, 25, 0, 30)


def test_dst_fall_back_keeps_the_local_opening_time() -> None:
    new_york = local_window(window("America/New_York", "09:00", "17:00"))
    # 2026-11-01: -04:00 -> -05:00; 09:00 local is 13:00Z before, 14:00Z that day.
    assert next_in_window(utc(2026, 10, 31, 22, 0), new_york) == utc(2026, 11, 1, 14, 0)


def test_window_applies_to_the_requested_time() -> None:
    paris = window("Europe/Paris", "08:00", "21:00")
    send_at = utc(2026, 6, 1, 20, 0)  # 22:00 in Paris: after the window
    assert due_time(NOW, send_at, None, paris, YEAR) == utc(2026, 6, 2, 6, 0)
    # now inside the window, nothing asked: at once
    assert due_time(NOW, None, None, paris, YEAR) is None


def test_due_milliseconds_round_up_so_nothing_is_early() -> None:
    from pulse.queue.due import due_ms

    assert due_ms(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1000
    assert due_ms(datetime(1970, 1, 1, 0, 0, 1, 1, tzinfo=UTC)) == 1001
    assert due_ms(datetime(2026, 6, 1, 12, 0, 0, 999_001, tzinfo=UTC)) % 1000 == 0
