"""IANA time zones by name, refused with a ValueError when unknown or path-like.

Its own module, free of cronsim, because the client (pulse.client, installed alone) loads it
through quiet hours, and cron schedules load it too.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError when there is none of that name."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a tzdata folder ("America")
        raise ValueError(f"unknown IANA time zone {name!r}") from None
