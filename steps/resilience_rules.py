"""Circuit breaker transitions, token bucket arithmetic and target keys. Plain Python: no Django.

Decisions only (house style, Architecture 2): each function takes the current state, the policy
and `now`, and returns the new state. `steps.guards` loads and stores the rows around them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from flows.language.durations import DURATION_PATTERN, parse_duration

# Circuit breakers (SPANE's `config.circuitBreaker`, with seconds instead of milliseconds)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class OnOpen(StrEnum):
    FAIL = "fail"
    DEFER = "defer"


class OnUnhealthy(StrEnum):
    WAIT = "wait"
    FAIL = "fail"


BREAKER_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "failure_threshold": {"type": "integer", "minimum": 1, "default": 5},
        "success_threshold": {"type": "integer", "minimum": 1, "default": 2},
        "open_timeout": {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "default": 60,
        },
        "on_open": {"enum": [value.value for value in OnOpen], "default": "fail"},
    },
    "additionalProperties": False,
}
"""JSON Schema (Draft 2020-12) of a step's or a connector's `circuit_breaker`."""

ON_UNHEALTHY_SCHEMA: dict[str, Any] = {"enum": [value.value for value in OnUnhealthy]}


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    success_threshold: int = 2
    open_timeout: float = 60.0
    on_open: OnOpen = OnOpen.FAIL

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BreakerPolicy:
        """The policy `data` describes; raises ValueError saying what is wrong with it."""
        error = best_match(Draft202012Validator(BREAKER_POLICY_SCHEMA).iter_errors(dict(data)))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path)
            raise ValueError(
                f"invalid circuit_breaker{f' at {where}' if where else ''}: {error.message}"
            )
        return cls(
            failure_threshold=data.get("failure_threshold", cls.failure_threshold),
            success_threshold=data.get("success_threshold", cls.success_threshold),
            open_timeout=parse_duration(data.get("open_timeout", cls.open_timeout)),
            on_open=OnOpen(data.get("on_open", cls.on_open)),
        )


@dataclass(frozen=True)
class Breaker:
    """One target's breaker. `failures` counts consecutive failures (while open: since it opened)."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    successes: int = 0
    opened_at: datetime | None = None


@dataclass(frozen=True)
class Admission:
    allowed: bool
    breaker: Breaker
    """The breaker after asking: an open one whose timeout has passed comes back half open."""
    retry_after: float = 0.0
    """When refused: seconds until the breaker half-opens."""


def admit_call(breaker: Breaker, policy: BreakerPolicy, now: datetime) -> Admission:
    """May a call go through? Closed and half-open breakers let calls through; an open one
    refuses them until `open_timeout` has passed, then half-opens and lets them through."""
    current = _settled(breaker, policy, now)
    if current.state is not BreakerState.OPEN:
        return Admission(True, current)
    assert current.opened_at is not None  # an open breaker always knows when it opened
    remaining = (current.opened_at - now).total_seconds() + policy.open_timeout
    return Admission(False, current, retry_after=max(0.0, remaining))


def after_call(breaker: Breaker, policy: BreakerPolicy, ok: bool, now: datetime) -> Breaker:
    """The breaker after a call that succeeded (`ok`) or failed in a way that counts."""
    current = _settled(breaker, policy, now)
    if current.state is BreakerState.CLOSED:
        if ok:
            return replace(current, failures=0)
        if current.failures + 1 >= policy.failure_threshold:
            return Breaker(BreakerState.OPEN, current.failures + 1, 0, now)
        return replace(current, failures=current.failures + 1)
    if current.state is BreakerState.HALF_OPEN:
        if not ok:
            return Breaker(BreakerState.OPEN, current.failures + 1, 0, now)
        if current.successes + 1 >= policy.success_threshold:
            return Breaker()
        return replace(current, successes=current.successes + 1)
    # Open: a call let through before it opened. A late success proves nothing about now; a late
    # failure is counted for the record but does not push the half-open time further out.
    return current if ok else replace(current, failures=current.failures + 1)


def _settled(breaker: Breaker, policy: BreakerPolicy, now: datetime) -> Breaker:
    """An open breaker whose timeout has passed is half open: the transition happens on read."""
    if breaker.state is BreakerState.OPEN and (
        breaker.opened_at is None
        or now >= breaker.opened_at + timedelta(seconds=policy.open_timeout)
    ):
        return replace(breaker, state=BreakerState.HALF_OPEN, successes=0)
    return breaker


def counts_as_failure(output: Mapping[str, Any] | None) -> bool:
    """Whether a failed call's output blames the target: a transport failure (no HTTP status)
    or a 5xx. A 4xx means the target answered and refused this request; it is the caller's."""
    status = output.get("status") if isinstance(output, Mapping) else None
    return not isinstance(status, int) or status >= 500


# Rate limits: token buckets


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_at: datetime


def default_burst(rate: float) -> float:
    """A second's worth of requests, and at least one, or nothing could ever go through."""
    return max(1.0, float(rate))


def take_token(bucket: Bucket, rate: float, burst: float, now: datetime) -> tuple[Bucket, float]:
    """Refill `bucket` at `rate` tokens a second (up to `burst`) and take one token.

    Returns the new bucket and 0.0, or, when there is no whole token, the refilled bucket and the
    seconds until there will be one. Clocks of different workers may disagree: time never runs
    backwards here, so a late clock neither refills twice nor drains the bucket.
    """
    elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
    tokens = min(burst, bucket.tokens + elapsed * rate)
    refilled = Bucket(tokens, max(bucket.updated_at, now))
    if tokens >= 1.0:
        return replace(refilled, tokens=tokens - 1.0), 0.0
    return refilled, (1.0 - tokens) / rate


@dataclass(frozen=True)
class RateSpec:
    key: str
    rate: float
    burst: float


def parse_rate_limits(raw: Mapping[str, Any]) -> dict[str, RateSpec]:
    """`FURROW_RATE_LIMITS`: key -> requests per second, or {"rate": r, "burst": b}.

    Raises ValueError naming the first bad entry.
    """
    specs: dict[str, RateSpec] = {}
    for key, value in raw.items():
        rate, burst = (
            (value.get("rate"), value.get("burst")) if isinstance(value, Mapping) else (value, None)
        )
        if not _positive(rate):
            raise ValueError(f"rate limit {key!r}: the rate must be a number above 0, not {rate!r}")
        if burst is not None and (not _positive(burst) or burst < 1):
            raise ValueError(
                f"rate limit {key!r}: the burst must be a number of at least 1, not {burst!r}"
            )
        specs[key] = RateSpec(key, float(rate), float(burst) if burst else default_burst(rate))
    return specs


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


# Targets


def http_target_key(url: Any) -> str | None:
    """`http:<host>:<port>` for an http(s) url, else None. The breaker and health key of http steps."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"http:{host}:{port or (443 if scheme == 'https' else 80)}"


def connector_target_key(name: str) -> str:
    return f"connector:{name}"
