"""Retry-After read the same way for every channel: seconds or an HTTP-date."""

from datetime import UTC, datetime

import pytest

from pulse.core.retry_after import MAX_RETRY_AFTER_S, retry_after_seconds

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Mon, 30 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 30 Nov 2026 11:00:00 GMT", 0.0),  # already past: at once
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delay-seconds is a non-negative integer
        ("99999999", MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, NOW) == expected
