"""A durable timer: the step waits, holding no worker, then passes its input through (SPANE's delay).

Give `for` (a duration: seconds as a number, or "30s", "1h30m", "2d") or `until` (an ISO 8601
timestamp with a time zone offset or "Z"). SPANE's keys are accepted too, instead of those two:
`duration` (milliseconds), `durationSeconds`, `durationMinutes`; when several are given the first
in that order wins. A moment already past is due at once; a delay longer than 366 days is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from flows.language.durations import DURATION_PATTERN, parse_duration
from steps.executors.base import StepContext, StepResult, Wait, config_error

MAX_DELAY = timedelta(days=366)
SPANE_KEYS: tuple[tuple[str, float], ...] = (
    ("duration", 0.001),
    ("durationSeconds", 1.0),
    ("durationMinutes", 60.0),
)
"""SPANE's duration keys in the order they win, with the seconds in one unit of each."""
_SPANE_NAMES = tuple(name for name, _ in SPANE_KEYS)
_AMOUNT = {"type": "number", "minimum": 0}
_REQUIRED_ANY_SPANE_KEY = {"anyOf": [{"required": [name]} for name in _SPANE_NAMES]}


class DelayError(ValueError):
    """A delay that cannot be scheduled; the message is the step's error."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DelayExecutor:
    type: ClassVar[str] = "delay"
    description: ClassVar[str] = (
        "Waits, holding no worker, for a duration or until a moment; passes its input through."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "for": {
                "anyOf": [_AMOUNT, {"type": "string", "pattern": DURATION_PATTERN}],
            },
            "until": {"type": "string", "minLength": 1},
            **dict.fromkeys(_SPANE_NAMES, _AMOUNT),
        },
        "oneOf": [{"required": ["for"]}, {"required": ["until"]}, _REQUIRED_ANY_SPANE_KEY],
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        # The clock is passed in so tests can fix "now" (house style: pass `now` in).
        self.clock = clock

    def run(self, ctx: StepContext) -> StepResult:
        problem = (
            _combination_error(ctx.config)
            or _amount_error(ctx.config)
            or config_error(self.config_schema, ctx.config)
        )
        if problem:
            return StepResult.failure(problem, retryable=False)
        try:
            until = due_at(ctx.config, self.clock())
        except DelayError as exc:
            return StepResult.failure(str(exc), retryable=False)
        shown = until.isoformat()
        on_due = StepResult.success({"waited_until": shown, "input": ctx.input})
        return StepResult.waiting(
            Wait(kind="timer", until=until, on_due=on_due), output={"until": shown}
        )


def due_at(config: Mapping[str, Any], now: datetime) -> datetime:
    """When the delay of a valid config ends, in UTC: never before `now`, at most 366 days after.

    Raises DelayError for an unreadable or naive `until` and for a delay that is too long.
    """
    if "until" in config:
        until = parse_until(config["until"])
    else:
        seconds = delay_seconds(config)
        if seconds > MAX_DELAY.total_seconds():
            raise DelayError(f"delay is longer than {MAX_DELAY.days} days")
        until = now + timedelta(seconds=seconds)
    if until - now > MAX_DELAY:
        raise DelayError(f"delay is longer than {MAX_DELAY.days} days (until {until.isoformat()})")
    return max(until, now).astimezone(UTC)


def delay_seconds(config: Mapping[str, Any]) -> float:
    """Seconds from `for` or the first SPANE key present. Raises DelayError."""
    if "for" in config:
        try:
            return parse_duration(config["for"])
        except ValueError as exc:
            raise DelayError(f"invalid for: {exc}") from None
    for name, unit in SPANE_KEYS:
        if name in config:
            return float(config[name]) * unit
    raise DelayError("give one of for, until, duration, durationSeconds, durationMinutes")


def parse_until(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text. Raises DelayError."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DelayError(f"until is not an ISO 8601 timestamp: {text!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive moment would mean whatever the worker's zone is: refuse rather than guess.
        raise DelayError(f"until needs a time zone: {text!r} (add Z or an offset such as +02:00)")
    return moment.astimezone(UTC)


def _combination_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's oneOf would only report "... is valid under each of ...".
    given = [name for name in ("for", "until") if name in config]
    spane = any(name in config for name in _SPANE_NAMES)
    if len(given) > 1 or (given and spane):
        return f"invalid config: give only one of for, until, or SPANE's {'/'.join(_SPANE_NAMES)}"
    if not given and not spane:
        return "invalid config: give for or until"
    return None


def _amount_error(config: Mapping[str, Any]) -> str | None:
    # Checked before the schema so a negative amount gets this message, not "less than the minimum".
    for name in ("for", *_SPANE_NAMES):
        value = config.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            return "delay duration must be positive"
        if isinstance(value, str) and value.strip().startswith("-"):
            return "delay duration must be positive"
    if isinstance(config.get("for"), str | bool):
        try:
            parse_duration(config["for"])
        except ValueError as exc:
            return f"invalid for: {exc}"
    return None
