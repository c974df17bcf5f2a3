"""When a notification is due: ``send_at`` / ``delay_s`` and the recipient's quiet hours.

Pure (the clock is passed in). A due time in the past or now means "send at once" (None); a
time beyond the schedule bound is the client's error, naming the field that asked for it.

Quiet hours (``deliver_in_window``) are local wall-clock times in an IANA zone: the send is
deferred to the first instant, at or after the requested one, whose local time lies inside
``[from, to)``. A window may cross midnight (``22:00``-``06:00``); ``to`` may be ``24:00``. On a
day the clocks skip the opening time (a DST gap), the window opens when the clocks jump; on a
day they repeat it, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import msgspec

from pulse.core.errors import InvalidInput
from pulse.core.zones import zone

WINDOW = "deliver_in_window"
Clock = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]
RequestedTime = Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339 with an offset
Delay = Annotated[float, msgspec.Meta(ge=0)]


class DeliveryWindow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Quiet hours as the client writes them: ``{"tz": "Europe/Paris", "from": "08:00",
    "to": "21:00"}``, local times ``HH:MM``."""

    tz: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    start: Clock = msgspec.field(name="from")
    end: Clock = msgspec.field(name="to")


@dataclass(frozen=True, slots=True)
class LocalWindow:
    zone: ZoneInfo
    start: time
    end: time

    def contains(self, wall: time) -> bool:
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end  # across midnight


def local_window(window: DeliveryWindow, where: str = "$") -> LocalWindow:
    """The window with its zone loaded; an unknown zone or an empty window is a 422."""
    at = f"{where}.{WINDOW}"
    try:
        tz = zone(window.tz)
    except ValueError:
        detail = f"unknown time zone {window.tz!r} (use an IANA name)"
        raise InvalidInput(detail, f"{at}.tz") from None
    start, end = _clock(window.start), _clock(window.end)
    if start == end:
        raise InvalidInput("the window is empty: 'from' and 'to' are equal", f"{at}.to")
    return LocalWindow(tz, start, end)


def _clock(text: str) -> time:
    return time(0) if text == "24:00" else time.fromisoformat(text)


def next_in_window(at: datetime, window: LocalWindow) -> datetime:
    """The first instant at or after ``at`` whose local time is inside ``window`` (UTC)."""
    at = at.astimezone(UTC)
    local = at.astimezone(window.zone)
    if window.contains(local.time()):
        return at
    for days in range(3):
        opening = _opening(local.date() + timedelta(days=days), window.start, window.zone)
        if opening > at:
            return opening
    raise AssertionError("a daily window opens within two days")  # pragma: no cover


def _opening(day: date, start: time, zone: ZoneInfo) -> datetime:
    """When ``start`` first happens on ``day`` (UTC): its first occurrence when the clocks
    repeat it, the moment they jump past it when they skip it."""
    wall = datetime.combine(day, start)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # the offset after: earlier
    return _transition(before, first, zone)


def _transition(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The instant in ``(low, high]`` where the zone's offset changes, to the second."""
    offset = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high


def due_time(
    now: datetime,
    send_at: datetime | None,
    delay_s: float | None,
    window: DeliveryWindow | None,
    max_ahead_s: float,
    where: str = "$",
) -> datetime | None:
    """When to send (UTC), or None for at once. ``send_at`` and ``delay_s`` exclude each other;
    either beyond ``max_ahead_s`` is refused naming it."""
    if send_at is not None and delay_s is not None:
        raise InvalidInput("send either 'send_at' or 'delay_s', not both", f"{where}.delay_s")
    wanted, field = now, None
    if send_at is not None:
        try:
            wanted, field = send_at.astimezone(UTC), "send_at"
        except OverflowError:  # year 1 or 9999 with an offset that carries it past the range
            raise InvalidInput("send_at: out of range", f"{where}.send_at") from None
    elif delay_s is not None:  # bounded first: a huge float overflows a timedelta
        wanted, field = now + timedelta(seconds=min(delay_s, max_ahead_s + 1)), "delay_s"
    if field is not None and (wanted - now).total_seconds() > max_ahead_s:
        raise InvalidInput(
            f"{field}: at most {max_ahead_s:.0f} s ({max_ahead_s / 86400:g} days) ahead"
            " (PULSE_MAX_SCHEDULE_AHEAD_S)",
            f"{where}.{field}",
        )
    if window is not None:
        wanted = next_in_window(max(wanted, now), local_window(window, where))
    return wanted if wanted > now else None
