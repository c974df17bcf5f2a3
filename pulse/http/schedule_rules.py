"""Cron schedules as the API reads and answers them: request types, the checks a schedule passes
before it is stored (each failure a 422 naming its field), and the answer document.

The notification is checked exactly as ``POST /api/notifications/`` checks one (the same
validation, the stream's limits), so every occurrence is accepted when it fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec

from pulse.core.cron import expression, next_times
from pulse.core.errors import InvalidInput
from pulse.core.ids import uuid7
from pulse.core.models import Job, JobKind
from pulse.core.ports import ChannelSpec
from pulse.core.zones import zone
from pulse.http.validation import FallbackStep, NotificationRequest, check_item
from pulse.services.accept import check_streamable
from pulse.store.schedules import JobTemplate, Schedule

Aware = Annotated[datetime, msgspec.Meta(tz=True)]
CronText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ZoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_CATCH_UP = 100  # a schedule's backlog fired at once, at most (its tenant's share of a tick)
CatchUpLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_CATCH_UP)]
MisfirePolicy = Literal["skip", "catch_up"]
NEXT_FIRE_TIMES = 5
DEFAULT_CATCH_UP = 10
ONE_SECOND = timedelta(seconds=1)
# starts_at/ends_at must lie here: far from datetime's own ends (years 1 and 9999), which a
# second less or five years' search ahead would overflow
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


class ScheduleRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A cron schedule: ``notification`` (the body of ``POST /api/notifications/``) is created
    at each occurrence of ``cron`` (5 fields or @hourly, @daily, @weekly, @monthly, @yearly) in
    ``timezone``, from ``starts_at`` (default: now) until ``ends_at``. ``misfire``: what to do
    with occurrences the scheduler could not fire on time (all workers down): ``skip`` them, or
    ``catch_up`` by firing the latest ``catch_up_limit`` of them (default 10). A ``starts_at``
    in the past with ``catch_up`` fires the latest missed occurrences since then at once.
    Instead of ``notification``, ``job`` (``{"task", "args", "priority", "max_attempts"}``, as
    ``POST /api/jobs/`` checks it) enqueues a task job at each occurrence: exactly one of them."""

    cron: CronText
    timezone: ZoneName = "UTC"
    notification: NotificationRequest | None = None
    job: JobTemplate | None = None
    starts_at: Aware | None = None
    ends_at: Aware | None = None
    misfire: MisfirePolicy = "skip"
    catch_up_limit: CatchUpLimit | None = None
    paused: bool = False


class SchedulePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Any fields of a schedule to change; ``null`` clears ``starts_at`` or ``ends_at``."""

    cron: CronText | msgspec.UnsetType = msgspec.UNSET
    timezone: ZoneName | msgspec.UnsetType = msgspec.UNSET
    notification: NotificationRequest | msgspec.UnsetType = msgspec.UNSET
    job: JobTemplate | msgspec.UnsetType = msgspec.UNSET  # only on a schedule of a job
    starts_at: Aware | msgspec.UnsetType | None = msgspec.UNSET
    ends_at: Aware | msgspec.UnsetType | None = msgspec.UNSET
    misfire: MisfirePolicy | msgspec.UnsetType = msgspec.UNSET
    catch_up_limit: CatchUpLimit | msgspec.UnsetType | None = msgspec.UNSET


class ScheduleDocument(msgspec.Struct, kw_only=True):
    """A schedule; ``next_fire_times`` are its next occurrences (RFC 3339, in its zone)."""

    id: str
    cron: str
    timezone: str
    notification: dict[str, Any] | None
    job: dict[str, Any] | None
    starts_at: datetime | None
    ends_at: datetime | None
    misfire: MisfirePolicy
    catch_up_limit: int | None
    paused: bool
    next_fire_times: list[str]
    last_fired_at: datetime | None
    fired: int
    skipped: int
    created_at: datetime | None
    updated_at: datetime | None


class ScheduleList(msgspec.Struct, kw_only=True):
    items: list[ScheduleDocument]
    next_cursor: str | None = None  # pass as ``cursor`` for the next page


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What the checks need from the deployment."""

    specs: Mapping[str, ChannelSpec]
    max_depth: int
    default_max_attempts: int


def document(schedule: Schedule, now: datetime) -> ScheduleDocument:
    tz = zone(schedule.timezone)
    after = max(now, schedule.cursor_at)
    upcoming = next_times(schedule.cron, tz, after, schedule.ends_at, NEXT_FIRE_TIMES)
    return ScheduleDocument(
        id=schedule.id,
        cron=schedule.cron,
        timezone=schedule.timezone,
        notification=_decoded(schedule.notification),
        job=_decoded(schedule.job),
        starts_at=schedule.starts_at,
        ends_at=schedule.ends_at,
        misfire="catch_up" if schedule.misfire == "catch_up" else "skip",
        catch_up_limit=schedule.catch_up_limit if schedule.misfire == "catch_up" else None,
        paused=schedule.paused,
        next_fire_times=[at.astimezone(tz).isoformat() for at in upcoming],
        last_fired_at=schedule.last_fired_at,
        fired=schedule.fired,
        skipped=schedule.skipped,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def _decoded(text: str | None) -> dict[str, Any] | None:
    return None if text is None else msgspec.json.decode(text)


def one_template(body: ScheduleRequest) -> None:
    """A schedule creates a notification or enqueues a job at each occurrence: one of them."""
    if body.notification is None and body.job is None:
        raise InvalidInput("a schedule needs a notification or a job", "$.notification")
    if body.notification is not None and body.job is not None:
        raise InvalidInput("a schedule has a notification or a job, not both", "$.job")


def new_schedule(
    body: ScheduleRequest, tenant_id: str, limits: Limits, now: datetime, job: str | None = None
) -> Schedule:
    """The row to insert for ``body``, every field checked (``job``: its job template, checked
    against the task's schema by the caller)."""
    one_template(body)
    notification = body.notification
    stored = None if notification is None else _notification(notification, tenant_id, limits)
    schedule = Schedule(
        id=str(uuid7()),
        tenant_id=tenant_id,
        cron=_cron(body.cron),
        timezone=_zone(body.timezone),
        notification=stored,
        job=job,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        misfire=body.misfire,
        catch_up_limit=_catch_up_limit(body.misfire, body.catch_up_limit),
        paused=body.paused,
        cursor_at=now,
        next_fire_at=None,
    )
    return _timed(schedule, now, start_moved=True, since=None)


def edited(
    old: Schedule, patch: SchedulePatch, limits: Limits, now: datetime, job: str | None = None
) -> Schedule:
    """``old`` with ``patch`` applied, every field checked again (``job``: ``patch.job`` as the
    caller checked it). A new expression or zone counts from now (nothing before is fired for
    it); a later start moves the cursor there."""
    changes: dict[str, Any] = _template_changes(old, patch, job)
    if patch.cron is not msgspec.UNSET:
        changes["cron"] = _cron(patch.cron)
    if patch.timezone is not msgspec.UNSET:
        changes["timezone"] = _zone(patch.timezone)
    if patch.notification is not msgspec.UNSET:
        changes["notification"] = _notification(patch.notification, old.tenant_id, limits)
    for name in ("starts_at", "ends_at", "misfire"):
        if (value := getattr(patch, name)) is not msgspec.UNSET:
            changes[name] = value
    misfire = changes.get("misfire", old.misfire)
    if patch.catch_up_limit is not msgspec.UNSET or misfire != old.misfire:
        limit = None if patch.catch_up_limit is msgspec.UNSET else patch.catch_up_limit
        changes["catch_up_limit"] = _catch_up_limit(misfire, limit)
    schedule = msgspec.structs.replace(old, **changes)
    if {"cron", "timezone"} & changes.keys():
        schedule = msgspec.structs.replace(schedule, cursor_at=max(old.cursor_at, now))
    return _timed(schedule, now, start_moved="starts_at" in changes, since=old.cursor_at)


def _template_changes(old: Schedule, patch: SchedulePatch, job: str | None) -> dict[str, Any]:
    """A schedule keeps its kind: a notification's gets a new notification, a job's a job."""
    if patch.notification is not msgspec.UNSET and old.notification is None:
        raise InvalidInput("this schedule enqueues a job: change its job", "$.notification")
    if patch.job is msgspec.UNSET:
        return {}
    if old.job is None:
        raise InvalidInput("this schedule sends a notification: change it", "$.job")
    return {"job": job}


def resumed(old: Schedule, now: datetime) -> Schedule:
    """Running again from now: occurrences while it was paused are not fired."""
    schedule = msgspec.structs.replace(old, paused=False, cursor_at=max(old.cursor_at, now))
    return _timed(schedule, now, start_moved=False, since=old.cursor_at)


def _timed(
    schedule: Schedule, now: datetime, *, start_moved: bool, since: datetime | None
) -> Schedule:
    """Check start and end, place the cursor at a new start (never back before ``since``, what
    an existing schedule has handled already), and find the next occurrence; 422 when there is
    none left to fire (nothing accepted may stay undeliverable)."""
    starts = _bounded(schedule.starts_at, "starts_at")
    ends = _bounded(schedule.ends_at, "ends_at")
    schedule = msgspec.structs.replace(schedule, starts_at=starts, ends_at=ends)
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidInput("ends_at must be later than starts_at", "$.ends_at")
    if ends is not None and ends <= now:  # as BullMQ's endDate: a past end has nothing to fire
        raise InvalidInput("ends_at must be in the future", "$.ends_at")
    cursor = schedule.cursor_at
    if start_moved and starts is not None:
        # catch_up counts occurrences since the start as missed; skip starts at the earliest now
        from_start = starts - ONE_SECOND
        cursor = from_start if schedule.misfire == "catch_up" else max(from_start, now)
        cursor = cursor if since is None else max(cursor, since)
    upcoming = next_times(schedule.cron, zone(schedule.timezone), cursor, ends, 1)
    if not upcoming:
        raise InvalidInput("the schedule has no occurrence left before ends_at", "$.ends_at")
    return msgspec.structs.replace(schedule, cursor_at=cursor, next_fire_at=upcoming[0])


def _bounded(at: datetime | None, field: str) -> datetime | None:
    """``at`` as a UTC instant between ``EARLIEST`` and ``LATEST``; a 422 naming ``field``."""
    if at is None:
        return None
    try:
        instant = at.astimezone(UTC)
    except OverflowError:
        instant = None
    if instant is None or not EARLIEST <= instant <= LATEST:
        detail = f"{field} must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}"
        raise InvalidInput(detail, f"$.{field}")
    return instant


def _cron(text: str) -> str:
    try:
        return expression(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), "$.cron") from None


def _zone(name: str) -> str:
    try:
        return zone(name).key
    except ValueError as exc:
        raise InvalidInput(str(exc), "$.timezone") from None


def _catch_up_limit(misfire: str, limit: int | None) -> int:
    if misfire == "catch_up":
        return limit or DEFAULT_CATCH_UP
    if limit is not None:
        raise InvalidInput("catch_up_limit applies only to misfire 'catch_up'", "$.catch_up_limit")
    return 1


def _notification(request: NotificationRequest, tenant_id: str, limits: Limits) -> str:
    """Checked as ``POST /api/notifications/`` checks it (422 under ``$.notification``, 501 for
    a channel the deployment cannot deliver); stored with recipients normalised."""
    for field in ("send_at", "delay_s", "deliver_in_window"):  # an occurrence fires at its time
        if getattr(request, field, None) is not None:
            raise InvalidInput(
                f"a schedule's notification has no {field}: it is sent at each occurrence"
                " (set the time with cron and timezone)",
                f"$.notification.{field}",
            )
    try:
        checked = check_item(msgspec.to_builtins(request), limits.specs, limits.max_depth)
        req = checked.request
        check_streamable(
            Job(
                id=str(uuid7()), tenant_id=tenant_id, kind=JobKind.NOTIFICATION,
                channel=req.channel, recipient=checked.recipient, payload=req.payload,
                priority=req.priority, max_attempts=req.max_attempts or limits.default_max_attempts,
                fallback=checked.fallback,
            )
        )  # fmt: skip
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, "$.notification" + (exc.pointer or "$")[1:]) from None
    steps = [FallbackStep(**step) for step in checked.fallback] or None
    normalised = msgspec.structs.replace(req, recipient=checked.recipient, fallback=steps)
    return msgspec.json.encode(normalised).decode()
