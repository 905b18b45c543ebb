"""Cron schedules in a time zone, and the missed-fire policies (flows/language/schedule.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.language.schedule import LATE_TOLERANCE, Schedule, ScheduleError, due, schedule_problem


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_fire_times_are_in_the_schedules_zone_and_returned_in_utc():
    berlin = Schedule("30 2 * * *", "Europe/Berlin")
    # Winter: UTC+1, so 02:30 Berlin is 01:30 UTC.
    assert berlin.next_after(utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 11, 1, 30)
    # Summer: UTC+2.
    assert berlin.next_after(utc(2026, 7, 10, 12, 0)) == utc(2026, 7, 11, 0, 30)


def test_a_local_time_the_clocks_skip_fires_once_after_the_jump():
    berlin = Schedule("30 2 * * *", "Europe/Berlin")
    # 29 March 2026: 02:00 -> 03:00 in Berlin; 02:30 does not exist.
    fires = berlin.upcoming(utc(2026, 3, 28, 12, 0), 3)
    assert fires == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_upcoming_lists_strictly_increasing_times():
    fires = Schedule("*/15 * * * *").upcoming(utc(2026, 1, 1, 0, 0), 4)
    assert fires == [utc(2026, 1, 1, 0, m) for m in (15, 30, 45)] + [utc(2026, 1, 1, 1, 0)]


@pytest.mark.parametrize(
    ("cron", "zone", "words"),
    [
        ("* * * *", "UTC", "five fields"),
        ("61 * * * *", "UTC", "not a cron expression"),
        ("* * * * * *", "UTC", "five fields"),
        ("0 12 * * *", "Mars/Olympus", "unknown time zone"),
        ("0 12 * * *", "../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_schedules_say_why(cron, zone, words):
    assert words in schedule_problem(cron, zone)
    with pytest.raises(ScheduleError, match=words):
        Schedule(cron, zone)


HOURLY = Schedule("0 * * * *")


def test_a_fire_on_time_fires_and_moves_to_the_next():
    decision = due(HOURLY, utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 0, 1), "skip")
    assert decision.fire_at == utc(2026, 1, 1, 10)
    assert decision.next_fire_at == utc(2026, 1, 1, 11)
    assert decision.skipped == 0


def test_a_little_late_is_still_on_time():
    now = utc(2026, 1, 1, 10) + timedelta(seconds=LATE_TOLERANCE)
    assert due(HOURLY, utc(2026, 1, 1, 10), now, "skip").fire_at == utc(2026, 1, 1, 10)


def test_skip_drops_fires_missed_while_down():
    decision = due(HOURLY, utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30), "skip")
    assert decision.fire_at is None
    assert decision.next_fire_at == utc(2026, 1, 1, 14)
    assert decision.skipped == 4  # 10, 11, 12, 13


def test_skip_still_fires_the_latest_when_it_is_on_time():
    decision = due(HOURLY, utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 0, 5), "skip")
    assert decision.fire_at == utc(2026, 1, 1, 13)
    assert decision.skipped == 3


def test_run_once_fires_once_for_everything_missed():
    decision = due(HOURLY, utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30), "run_once")
    assert decision.fire_at == utc(2026, 1, 1, 13)
    assert decision.next_fire_at == utc(2026, 1, 1, 14)
    assert decision.skipped == 3


def test_a_very_long_outage_is_bounded():
    every_minute = Schedule("* * * * *")
    decision = due(every_minute, utc(2020, 1, 1), utc(2026, 1, 1, 0, 0, 30), "run_once")
    assert decision.next_fire_at == utc(2026, 1, 1, 0, 1)
    assert decision.fire_at == utc(2026, 1, 1, 0, 0)  # the latest, not one from 2020
    assert decision.skipped == 10_000  # counted up to a bound
