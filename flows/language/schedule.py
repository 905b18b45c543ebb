"""Cron schedules in a time zone: validation, the next fire times, and what to do about missed ones.

Pure: croniter does the calendar (months, weekdays, ranges, steps, DST), zoneinfo the zones.
Fire times are computed in the schedule's own zone, so "30 2 * * *" in Europe/Berlin fires at
02:30 Berlin time all year; on the night the clocks skip 02:30 it fires at 03:00.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MISSED_POLICIES = ("skip", "run_once")
"""skip: fires due while nothing was running are dropped (a fire counts as on time within
LATE_TOLERANCE); run_once: however many were missed, the schedule fires once on waking."""

LATE_TOLERANCE = 60.0
"""Seconds after its time a fire still counts as on time, not missed (a busy or restarting tick)."""


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        problem = schedule_problem(self.cron, self.timezone)
        if problem:
            raise ScheduleError(problem)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (aware), in UTC."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        fire: datetime = croniter(self.cron, local).get_next(datetime)
        return fire.astimezone(UTC)

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The latest fire time at or before `moment`, in UTC."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        fire: datetime = croniter(self.cron, local).get_prev(datetime)
        fire = fire.astimezone(UTC)
        following = self.next_after(fire)
        while following <= moment:
            fire, following = following, self.next_after(following)
        return fire

    def upcoming(self, moment: datetime, count: int = 5) -> list[datetime]:
        times, current = [], moment
        for _ in range(count):
            current = self.next_after(current)
            times.append(current)
        return times


def schedule_problem(cron: str, timezone: str) -> str | None:
    """Why (cron, timezone) is not a schedule, or None."""
    if not isinstance(cron, str) or len(cron.split()) != 5:
        return "cron must have five fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(cron):
        return f"not a cron expression: {cron!r}"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r} (use an IANA name such as Europe/Berlin)"
    return None


@dataclass(frozen=True)
class Decision:
    fire_at: datetime | None
    """The scheduled time to fire for now (it names the run), or None to fire nothing."""
    next_fire_at: datetime
    skipped: int
    """Scheduled times passed over without a run."""


def due(schedule: Schedule, next_fire_at: datetime, now: datetime, missed: str) -> Decision:
    """What a schedule whose next fire time is `next_fire_at` does at `now` (>= next_fire_at)."""
    latest = max(schedule.last_at_or_before(now), next_fire_at)
    following = schedule.next_after(now)
    skipped = _count_between(schedule, next_fire_at, latest)
    on_time = (now - latest).total_seconds() <= LATE_TOLERANCE
    if missed == "run_once" or on_time:
        return Decision(fire_at=latest, next_fire_at=following, skipped=skipped)
    return Decision(fire_at=None, next_fire_at=following, skipped=skipped + 1)


COUNT_LIMIT = 10_000


def _count_between(schedule: Schedule, first: datetime, last: datetime) -> int:
    """Fire times from `first` up to, not including, `last` (at most COUNT_LIMIT are counted)."""
    count, current = 0, first
    while current < last and count < COUNT_LIMIT:
        count += 1
        current = schedule.next_after(current)
    return count
