"""Cron time: expressions, occurrences across DST, and what a scheduler fires (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from pulse.core.cron import MAX_SCAN, Policy, expression, next_times, occurrences, plan
from pulse.core.zones import zone

pytestmark = pytest.mark.unit

NEW_YORK = zone("America/New_York")
PARIS = zone("Europe/Paris")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_aliases_expand_and_bad_expressions_are_refused() -> None:
    assert expression("@daily") == "0 0 * * *"
    assert expression(" @HOURLY ") == "0 * * * *"
    assert expression("@weekly") == "0 0 * * 0"
    assert expression("@monthly") == "0 0 1 * *"
    assert expression("@yearly") == "0 0 1 1 *"
    assert expression("*/5 9-17 * * MON-FRI") == "*/5 9-17 * * MON-FRI"
    for bad in ("", "* * * *", "0 * * * * *", "61 * * * *", "0 0 31 2 *", "@fortnightly", "x"):
        with pytest.raises(ValueError, match="cron expression"):
            expression(bad)


def test_unknown_zones_are_refused() -> None:
    for bad in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe/"):
        with pytest.raises(ValueError, match="time zone"):
            zone(bad)
    assert zone("Europe/Paris").key == "Europe/Paris"


def test_occurrence_in_the_spring_gap_fires_once_after_it() -> None:
    # Given 02:30 daily in New York, where 2026-03-08 02:00 jumps to 03:00
    times = next_times("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), None, 3)
    local = [t.astimezone(NEW_YORK) for t in times]
    # Then that night's occurrence is once, at the end of the gap; the others at 02:30
    assert [t.isoformat() for t in local] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_occurrence_in_the_repeated_hour_fires_once() -> None:
    # Given 01:30 daily in New York, where 2026-11-01 01:00-02:00 happens twice
    times = next_times("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), None, 3)
    # Then 2026-11-01 has one occurrence (the first 01:30, EDT), then daily at 01:30 EST
    assert [t.astimezone(NEW_YORK).isoformat() for t in times] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_from_inside_the_repeated_hour_no_occurrence_comes_twice() -> None:
    # Given the 01:30 EDT occurrence fired, and a scheduler asking again at 01:10 EST (later)
    first = utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    asked_at = utc(2026, 11, 1, 6, 10)  # 01:10 EST, the second 01:10
    following = next(occurrences("30 1 * * *", NEW_YORK, asked_at))
    # Then the next is the next day's, never the earlier instant cronsim's naive time gives
    assert following > asked_at > first
    assert following.astimezone(NEW_YORK).isoformat() == "2026-11-02T01:30:00-05:00"


def test_paris_gap_and_overlap_each_fire_once() -> None:
    spring = next_times("30 2 * * *", PARIS, utc(2026, 3, 28, 12), None, 2)
    autumn = next_times("30 2 * * *", PARIS, utc(2026, 10, 24, 12), None, 2)
    assert [t.astimezone(PARIS).isoformat() for t in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert [t.astimezone(PARIS).isoformat() for t in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_interval_expressions_keep_real_time_across_the_overlap() -> None:
    times = list(islice(occurrences("*/30 * * * *", NEW_YORK, utc(2026, 11, 1, 4, 40)), 4))
    assert [t.strftime("%H:%M") for t in times] == ["05:00", "05:30", "06:00", "06:30"]


def test_next_times_stop_at_the_end() -> None:
    times = next_times("0 * * * *", PARIS, utc(2026, 1, 1), utc(2026, 1, 1, 2, 30), 5)
    assert times == [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]


def test_on_time_occurrences_fire_and_late_ones_are_skipped() -> None:
    # Given a minutely schedule last handled at 10:00 and a scheduler back at 10:10:30
    cursor, now = utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 10, 30)
    decided = plan("* * * * *", PARIS, cursor, now, None, Policy("skip", 1, timedelta(minutes=1)))
    # Then only the occurrence within the grace fires; 10:01 .. 10:09 are skipped
    assert decided.fire == (utc(2026, 1, 1, 10, 10),)
    assert decided.skipped == 9
    assert decided.skipped_until == utc(2026, 1, 1, 10, 9)


def test_catch_up_fires_the_latest_missed_up_to_its_limit() -> None:
    cursor, now = utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 10, 30)
    policy = Policy("catch_up", 3, timedelta(seconds=20))
    decided = plan("* * * * *", PARIS, cursor, now, None, policy)
    assert decided.fire == (utc(2026, 1, 1, 10, 8), utc(2026, 1, 1, 10, 9), utc(2026, 1, 1, 10, 10))
    assert decided.skipped == 7
    assert decided.skipped_until == utc(2026, 1, 1, 10, 7)


def test_nothing_after_the_end_fires() -> None:
    cursor, now = utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 10, 30)
    policy = Policy("catch_up", 100, timedelta(minutes=1))
    decided = plan("* * * * *", PARIS, cursor, now, utc(2026, 1, 1, 10, 2), policy)
    assert decided.fire == (utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 2))
    assert decided.skipped == 0


def test_a_long_backlog_is_skipped_in_bounded_steps() -> None:
    # Given a minutely schedule whose fleet was down for a year
    cursor, now = utc(2025, 1, 1), utc(2026, 1, 1)
    policy = Policy("catch_up", 2, timedelta(minutes=1))
    decided = plan("* * * * *", PARIS, cursor, now, None, policy)
    # Then one plan skips a bounded step and fires nothing older than the latest
    assert decided.fire == ()
    assert decided.skipped == MAX_SCAN
    assert decided.skipped_until == cursor + timedelta(minutes=MAX_SCAN)


def test_a_scheduler_across_each_transition_fires_the_night_once() -> None:
    # Given 02:30 and 01:30 daily in New York, a scheduler that was last there the evening
    # before each transition and ticks every minute through the night
    for expr, evening in (("30 2 * * *", utc(2026, 3, 8, 0)), ("30 1 * * *", utc(2026, 11, 1, 0))):
        cursor, fired = evening, list[datetime]()
        policy = Policy("skip", 1, timedelta(minutes=1))
        for minute in range(1, 12 * 60):
            decided = plan(
                expr, NEW_YORK, cursor, evening + timedelta(minutes=minute), None, policy
            )
            fired += decided.fire
            cursor = max([cursor, *decided.fire])
            assert decided.skipped == 0
        # Then that night fired once
        assert len(fired) == 1, (expr, fired)


@pytest.mark.parametrize("folder", ["America", "Etc", "US", "Europe/"])
def test_a_time_zone_folder_is_an_unknown_zone(folder: str) -> None:
    # A name of a tzdata folder, not a zone: refused as unknown, not an OS error
    with pytest.raises(ValueError, match="time zone"):
        zone(folder)
