"""Cron time, pure: expressions (cronsim parses them), their occurrences as instants, and which
occurrences a scheduler fires now.

Occurrences are computed in the schedule's IANA zone and handled as UTC instants. cronsim
follows Debian cron for expressions with a fixed minute and hour: an occurrence inside a DST
gap fires once at the end of the gap (02:30 on a spring-forward night fires at 03:00), and one
inside a repeated hour fires once, at its first instance. It iterates such expressions in
naive local time, so an iteration started inside a repeated hour can answer an instant before
its start: ``occurrences`` drops those, so each occurrence comes once, strictly increasing.
Expressions with a wildcard minute or hour run on real time (every 30 minutes stays every 30
minutes across a repeated hour).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

Misfire = Literal["skip", "catch_up"]
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
SEARCH_YEARS = 5  # occurrences are searched this far ahead at most
MAX_SCAN = 10_000  # occurrences one plan looks at; a longer backlog is skipped over in steps


def expression(text: str) -> str:
    """The five-field expression for ``text`` (an alias is expanded); ValueError if cronsim
    refuses it or it has another number of fields (no seconds: Pulse fires by the minute)."""
    expr = ALIASES.get(text.strip().lower(), text.strip())
    if len(expr.split()) != 5:
        raise ValueError(
            "a cron expression has 5 fields (minute hour day month weekday)"
            " or is an alias such as @daily"
        )
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError) as exc:
        raise ValueError(f"not a valid cron expression: {exc}") from None
    return expr


def occurrences(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The occurrences of ``expr`` in ``tz`` strictly after the instant ``after``, as UTC
    instants, strictly increasing (see the module's note on repeated hours)."""
    last = after.astimezone(UTC)
    horizon = last + timedelta(days=366 * SEARCH_YEARS)
    try:
        for local in CronSim(expr, last.astimezone(tz)):
            instant = local.astimezone(UTC)
            if instant > horizon:
                return
            if instant > last:
                last = instant
                yield instant
    except StopIteration:  # cronsim gives up after 50 years without a match
        return


def next_times(
    expr: str, tz: ZoneInfo, after: datetime, until: datetime | None, n: int
) -> list[datetime]:
    """The next ``n`` occurrences after ``after`` that are not past ``until``."""
    found = islice(occurrences(expr, tz, after), n)
    return [at for at in found if until is None or at <= until]


@dataclass(frozen=True, slots=True)
class Policy:
    """How a schedule treats occurrences its scheduler could not fire on time."""

    misfire: Misfire = "skip"
    catch_up_limit: int = 1
    grace: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: ``skipped`` occurrences (the last is ``skipped_until``) are passed over,
    ``fire`` ones are fired, oldest first."""

    fire: tuple[datetime, ...]
    skipped: int
    skipped_until: datetime | None


def plan(
    expr: str, tz: ZoneInfo, cursor: datetime, now: datetime, until: datetime | None, policy: Policy
) -> Plan:
    """The occurrences after ``cursor`` (the last one handled) up to ``now``: on time (within
    the grace) ones fire; late ones are skipped, or with ``catch_up`` the latest
    ``catch_up_limit`` of them fire. A backlog of more than ``MAX_SCAN`` (a fleet down for
    months) is skipped over in steps of that many, so one plan stays cheap."""
    end = now if until is None else min(now, until)
    keep = policy.catch_up_limit if policy.misfire == "catch_up" else 0
    late: list[datetime] = []
    on_time: list[datetime] = []
    skipped, skipped_until = 0, None
    for count, at in enumerate(occurrences(expr, tz, cursor)):
        if at > end:
            break
        if count == MAX_SCAN:  # not reached the end: none of these is among the latest
            return Plan((), skipped + len(late), late[-1] if late else skipped_until)
        if end - at <= policy.grace:
            on_time.append(at)
            continue
        late.append(at)
        if len(late) > keep:
            skipped, skipped_until = skipped + 1, late.pop(0)
    return Plan(tuple(late + on_time), skipped, skipped_until)
