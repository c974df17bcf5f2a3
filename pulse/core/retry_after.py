"""Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, read by one rule for every
channel, so a provider that answers with a date is honoured as one that answers in seconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 86_400.0  # a day: a larger hint is a provider's mistake, not a plan


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait, or None when absent or unreadable; a date in the past is 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(delay) else None
