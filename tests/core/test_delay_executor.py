"""The delay step: a durable timer that holds no worker and passes its input through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from steps.executors.base import StepContext, StepResult, Wait
from steps.executors.delay import DelayExecutor

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PARENT = {"order": 42}


def run(config: dict[str, Any], now: datetime = NOW) -> StepResult:
    ctx = StepContext(
        run_id="run-1",
        step_name="pause",
        attempt=1,
        config=config,
        timeout=5,
        input=PARENT,
    )
    return DelayExecutor(clock=lambda: now).run(ctx)


def due(config: dict[str, Any]) -> datetime:
    result = run(config)
    assert result.wait is not None, result.error
    assert result.wait.until is not None
    return result.wait.until


def failure(config: dict[str, Any]) -> str:
    result = run(config)
    assert not result.ok
    assert result.wait is None
    assert not result.retryable
    assert result.error is not None
    return result.error


def test_a_delay_waits_on_a_timer_and_passes_its_input_through_when_due():
    result = run({"for": "90s"})
    until = NOW + timedelta(seconds=90)
    shown = "2025-03-01T12:01:30+00:00"
    assert result == StepResult.waiting(
        Wait(
            kind="timer",
            until=until,
            on_due=StepResult.success({"waited_until": shown, "input": PARENT}),
        ),
        output={"until": shown},
    )
    assert not result.ok
    assert result.error is None


def test_the_result_when_due_survives_being_stored():
    result = run({"for": 5})
    assert result.wait is not None
    on_due = result.wait.on_due
    assert StepResult.from_json(on_due.as_json()) == on_due


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        (30, 30),
        (1.5, 1.5),
        (0, 0),
        ("30s", 30),
        ("500ms", 0.5),
        ("1h30m", 5400),
        ("2d", 172800),
        ("45", 45),
        ("366d", 366 * 86400),
    ],
)
def test_for_takes_seconds_or_a_duration(duration, seconds):
    assert due({"for": duration}) == NOW + timedelta(seconds=seconds)


def test_until_takes_an_iso_timestamp_with_z_or_an_offset_and_is_kept_in_utc():
    assert due({"until": "2025-03-02T08:00:00Z"}) == datetime(2025, 3, 2, 8, tzinfo=UTC)
    until = due({"until": "2025-03-02T10:00:00+02:00"})
    assert until == datetime(2025, 3, 2, 8, tzinfo=UTC)
    assert until.tzinfo is UTC
    assert run({"until": "2025-03-02T10:00:00+02:00"}).output == {
        "until": "2025-03-02T08:00:00+00:00"
    }


def test_until_in_the_past_is_due_at_once():
    assert due({"until": "2020-01-01T00:00:00Z"}) == NOW


@pytest.mark.parametrize(
    ("config", "seconds"),
    [
        ({"duration": 1500}, 1.5),
        ({"durationSeconds": 20}, 20),
        ({"durationMinutes": 2}, 120),
        ({"durationMinutes": 2, "durationSeconds": 20, "duration": 1500}, 1.5),
        ({"durationMinutes": 2, "durationSeconds": 20}, 20),
    ],
)
def test_spane_duration_keys_are_accepted_and_the_first_in_order_wins(config, seconds):
    assert due(config) == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "config",
    [
        {"for": -5},
        {"for": "-5s"},
        {"for": "-5"},
        {"duration": -1},
        {"durationSeconds": -0.5},
        {"durationMinutes": 1, "durationSeconds": -1},
    ],
)
def test_a_negative_duration_is_refused(config):
    assert failure(config) == "delay duration must be positive"


@pytest.mark.parametrize("until", ["2025-03-02T08:00:00", "2025-03-02"])
def test_a_naive_until_is_refused(until):
    assert failure({"until": until}) == (
        f"until needs a time zone: {until!r} (add Z or an offset such as +02:00)"
    )


def test_an_until_that_is_not_a_timestamp_is_refused():
    assert failure({"until": "tomorrow"}) == "until is not an ISO 8601 timestamp: 'tomorrow'"


def test_a_delay_over_366_days_is_refused():
    assert failure({"for": "367d"}) == "delay is longer than 366 days"
    assert failure({"durationMinutes": 1e300}) == "delay is longer than 366 days"
    assert failure({"until": "2026-03-03T12:00:00Z"}) == (
        "delay is longer than 366 days (until 2026-03-03T12:00:00+00:00)"
    )


def test_a_duration_that_does_not_parse_is_refused():
    assert failure({"for": "ten minutes"}) == (
        "invalid for: 'ten minutes' is not a duration (examples: 500ms, 30s, 10m, 1h30m, 2d)"
    )


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "invalid config: give for or until"),
        (
            {"for": "1s", "until": "2025-03-02T08:00:00Z"},
            "invalid config: give only one of for, until, or SPANE's duration/durationSeconds/durationMinutes",
        ),
        (
            {"for": "1s", "duration": 1000},
            "invalid config: give only one of for, until, or SPANE's duration/durationSeconds/durationMinutes",
        ),
        ({"for": True}, "invalid for: True is not a duration"),
        ({"until": 1700000000}, "invalid config at until: 1700000000 is not of type 'string'"),
        ({"duration": "1000"}, "invalid config at duration: '1000' is not of type 'number'"),
        (
            {"for": "1s", "wait": True},
            "invalid config: Additional properties are not allowed ('wait' was unexpected)",
        ),
    ],
)
def test_a_bad_config_fails_the_step_without_retry(config, error):
    assert failure(config) == error


def test_the_config_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(DelayExecutor.config_schema)
    assert DelayExecutor.type == "delay"
    assert DelayExecutor.shell_quoted == frozenset()


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"for": -1},
        {"for": "soon"},
        {"for": True},
        {"until": ""},
        {"until": 5},
        {"for": "1s", "until": "2025-03-02T08:00:00Z"},
        {"until": "2025-03-02T08:00:00Z", "durationSeconds": 1},
        {"duration": -1},
        {"durationMinutes": "2"},
        {"for": "1s", "extra": 1},
    ],
)
def test_the_schema_refuses_bad_configs(config):
    assert not Draft202012Validator(DelayExecutor.config_schema).is_valid(config)


@pytest.mark.parametrize(
    "config",
    [
        {"for": "1h30m"},
        {"for": 0},
        {"until": "2025-03-02T08:00:00Z"},
        {"duration": 1000, "durationSeconds": 1},
    ],
)
def test_the_schema_accepts_good_configs(config):
    assert Draft202012Validator(DelayExecutor.config_schema).is_valid(config)


def test_without_a_clock_the_delay_counts_from_the_current_time():
    before = datetime.now(UTC)
    ctx = StepContext(run_id="r", step_name="pause", attempt=1, config={"for": "1m"}, timeout=5)
    result = DelayExecutor().run(ctx)
    assert result.wait is not None
    assert result.wait.until is not None
    assert (
        before + timedelta(minutes=1)
        <= result.wait.until
        <= datetime.now(UTC) + timedelta(minutes=1)
    )
