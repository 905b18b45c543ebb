"""The guard around every step attempt: target health, circuit breaker, rate limit.

The worker asks `admit` before running a step and tells `record` what happened after. Their
state is in the database (CircuitBreaker, RateLimit, TargetHealth), so it holds across every
worker on every machine; the decisions are `steps.resilience_rules`' pure functions. A step type
that has no target, no breaker and no rate limit costs no query at all.

Targets: `http:<host>:<port>` for http and http_async steps (from the rendered url),
`connector:<name>` for connector steps (`web.search`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from flows.language.durations import format_duration
from runs.models import Event
from steps import health
from steps.connectors import connector_of_type
from steps.executors.base import StepResult
from steps.executors.connector import ConnectorSpec
from steps.executors.http import url_error
from steps.models import CircuitBreaker, HealthStatus, RateLimit
from steps.resilience_rules import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    Bucket,
    OnOpen,
    OnUnhealthy,
    RateSpec,
    admit_call,
    after_call,
    connector_target_key,
    counts_as_failure,
    default_burst,
    http_target_key,
    parse_rate_limits,
    take_token,
)

log = logging.getLogger(__name__)

HTTP_TYPES = frozenset({"http", "http_async"})


@dataclass(frozen=True)
class Target:
    key: str
    health_url: str = ""
    connector: ConnectorSpec | None = None


def target_of(step_type: str, config: Mapping[str, Any]) -> Target | None:
    """The service a step calls, or None. Reads no database for non-connector types."""
    if step_type in HTTP_TYPES:
        key = http_target_key(config.get("url"))
        return Target(key, config.get("health_check") or "") if key else None
    if "." not in step_type:
        return None
    connector = connector_of_type(step_type)
    if connector is None:
        return None
    return Target(connector_target_key(connector.name), connector.health_url, connector)


def admit(
    step_type: str,
    config: Mapping[str, Any],
    *,
    breaker: Mapping[str, Any] | None,
    on_unhealthy: str | None,
    now: datetime,
) -> StepResult | None:
    """None: go ahead. Else the result to record instead of running (deferred or failed).

    In this order: an unhealthy target (`on_unhealthy` wait: deferred until its next check;
    fail: a retryable failure; None: run anyway), an open circuit (`on_open` fail: a failure
    that is not retried; defer: deferred until it half-opens), then a rate limit (deferred until
    the next token), last so that a refused call takes no token.
    """
    target = target_of(step_type, config)
    try:
        policy = _policy(breaker, target)
    except ValueError as exc:
        return StepResult.failure(str(exc), retryable=False)
    if on_unhealthy not in (None, *OnUnhealthy):
        return StepResult.failure(
            f"on_unhealthy must be wait or fail, not {on_unhealthy!r}", retryable=False
        )
    mode = OnUnhealthy(on_unhealthy) if on_unhealthy else None
    if target is not None and target.health_url:
        if problem := url_error(target.health_url):
            return StepResult.failure(f"invalid config at health_check: {problem}", retryable=False)
        if verdict := _health_verdict(target, mode, now):
            return verdict
    if (
        target is not None
        and policy is not None
        and (verdict := _breaker_verdict(target.key, policy, now))
    ):
        return verdict
    limits = rate_limits_for(step_type, target)
    return _take_tokens(limits, now) if limits else None


def record(
    step_type: str,
    config: Mapping[str, Any],
    result: StepResult,
    *,
    breaker: Mapping[str, Any] | None,
    now: datetime,
) -> None:
    """After the call: count it on the breaker, and note a success for the health checks.

    A success is `result.ok`, or a step left waiting (http_async: the service took the request).
    A failure counts only when it blames the target: no HTTP status (transport) or a 5xx. A 4xx,
    a deferred result and a failure another attempt cannot fix (bad config, missing secret)
    leave the breaker as it is.
    """
    target = target_of(step_type, config)
    if target is None:
        return
    ok = _outcome(result)
    if ok is None:
        return
    try:
        policy = _policy(breaker, target)
    except ValueError:
        policy = None  # admit already failed the step with the reason
    if policy is not None:
        _count(target.key, policy, ok, result.error or "", now)
    if ok and target.health_url:
        health.mark_success(target.key, now)


def _outcome(result: StepResult) -> bool | None:
    if result.defer is not None:
        return None
    if result.ok or result.wait is not None:
        return True
    if not result.retryable or not counts_as_failure(result.output):
        return None
    return False


def _policy(breaker: Mapping[str, Any] | None, target: Target | None) -> BreakerPolicy | None:
    if target is None:
        return None
    if breaker is not None:
        return BreakerPolicy.from_mapping(breaker)
    return target.connector.circuit_breaker if target.connector else None


# Health


def _health_verdict(target: Target, mode: OnUnhealthy | None, now: datetime) -> StepResult | None:
    row = health.register_target(target.key, target.health_url, now)
    if mode is None or row.status != HealthStatus.UNHEALTHY:
        return None
    reason = f"target {target.key} is unhealthy: {row.error or 'no reason given'}"
    if mode is OnUnhealthy.FAIL:
        return StepResult.failure(reason)
    # Until just after the next check, which may find it healthy again.
    every = health.interval()
    until_check = (row.next_check_at - now).total_seconds() if row.next_check_at else every
    return StepResult.deferred(min(every, max(1.0, until_check + 0.5)), f"{reason}; waiting")


# Circuit breakers


def _snapshot(row: CircuitBreaker) -> Breaker:
    return Breaker(BreakerState(row.state), row.failures, row.successes, row.opened_at)


def _breaker_verdict(key: str, policy: BreakerPolicy, now: datetime) -> StepResult | None:
    row = CircuitBreaker.objects.filter(key=key).first()
    if row is None:
        return None  # never failed: closed
    before = _snapshot(row)
    admission = admit_call(before, policy, now)
    if admission.allowed:
        if admission.breaker.state is not before.state:
            _half_open(row)
        return None
    wait = format_duration(admission.retry_after)
    if policy.on_open is OnOpen.DEFER:
        reason = f"circuit for {key} is open after {row.failures} failures; waiting {wait} for it to half-open"
        return StepResult.deferred(admission.retry_after, reason)
    return StepResult.failure(
        f"circuit for {key} is open after {row.failures} failures; failing fast (retry after {wait})",
        retryable=False,
    )


def _half_open(row: CircuitBreaker) -> None:
    with transaction.atomic():
        # Conditional: of all the workers that find it due at once, one records the change.
        moved = CircuitBreaker.objects.filter(
            pk=row.pk, state=BreakerState.OPEN, opened_at=row.opened_at
        ).update(state=BreakerState.HALF_OPEN, successes=0)
        if moved:
            _breaker_event(row.key, BreakerState.HALF_OPEN, row.failures)


def _count(key: str, policy: BreakerPolicy, ok: bool, error: str, now: datetime) -> None:
    with transaction.atomic():
        row = _locked_breaker(key, create=not ok)
        if row is None:
            return  # a success and no breaker row: closed with no failures, nothing to count
        before = _snapshot(row)
        after = after_call(before, policy, ok, now)
        if after == before and ok:
            return
        row.state, row.failures, row.successes, row.opened_at = (
            after.state,
            after.failures,
            after.successes,
            after.opened_at,
        )
        fields = ["state", "failures", "successes", "opened_at", "updated_at"]
        if not ok:
            row.last_failure, row.last_failure_at = error[:2000], now
            fields += ["last_failure", "last_failure_at"]
        row.save(update_fields=fields)
        if after.state is not before.state:
            _breaker_event(key, after.state, after.failures)


def _locked_breaker(key: str, *, create: bool) -> CircuitBreaker | None:
    """The breaker row under a lock (the caller holds a transaction); created when asked."""
    row = CircuitBreaker.objects.select_for_update().filter(key=key).first()
    if row is not None or not create:
        return row
    try:
        with transaction.atomic():
            CircuitBreaker.objects.create(key=key)
    except IntegrityError:  # another worker created it first; lock theirs
        pass
    return CircuitBreaker.objects.select_for_update().get(key=key)


def _breaker_event(key: str, state: BreakerState, failures: int, actor: str = "system") -> None:
    Event.objects.create(
        type="target.circuit_changed",
        actor=actor,
        data={"key": key, "state": state.value, "failures": failures},
    )


def reset_breaker(key: str, *, actor: str) -> CircuitBreaker:
    """Close the breaker `key` and forget its counts. Raises CircuitBreaker.DoesNotExist.
    Appends `target.circuit_changed` with the actor, when it was not already closed."""
    with transaction.atomic():
        row = CircuitBreaker.objects.select_for_update().get(key=key)
        was = row.state
        row.state, row.failures, row.successes, row.opened_at = BreakerState.CLOSED, 0, 0, None
        row.save(update_fields=["state", "failures", "successes", "opened_at", "updated_at"])
        if was != BreakerState.CLOSED:
            _breaker_event(key, BreakerState.CLOSED, 0, actor)
    return row


# Rate limits


def rate_limits_for(step_type: str, target: Target | None) -> list[RateSpec]:
    """The buckets a step takes a token from: its type's, and its target's (a connector's own
    rate_limit wins over a FURROW_RATE_LIMITS entry for `connector:<name>`)."""
    configured = _configured(json.dumps(settings.FURROW.get("RATE_LIMITS") or {}, sort_keys=True))
    keys = [step_type] if target is None else [step_type, target.key]
    specs = {key: configured[key] for key in keys if key in configured}
    if target is not None and target.connector is not None and target.connector.rate_limit:
        rate = target.connector.rate_limit
        specs[target.key] = RateSpec(target.key, rate, default_burst(rate))
    return list(specs.values())


@lru_cache(maxsize=4)
def _configured(raw: str) -> dict[str, RateSpec]:
    # Keyed on the setting's contents, so override_settings in tests takes effect.
    try:
        return parse_rate_limits(json.loads(raw))
    except ValueError as exc:  # the furrow.E102 system check reports it at startup
        log.error("FURROW_RATE_LIMITS ignored: %s", exc)
        return {}


def _take_tokens(specs: list[RateSpec], now: datetime) -> StepResult | None:
    """One token from every bucket, or none at all: deferred until the slowest has one."""
    with transaction.atomic():
        rows = _locked_buckets(specs, now)
        taken = {
            spec.key: take_token(
                Bucket(rows[spec.key].tokens, rows[spec.key].updated_at), spec.rate, spec.burst, now
            )
            for spec in specs
        }
        waits = [(wait, spec) for spec in specs if (wait := taken[spec.key][1]) > 0]
        if waits:
            wait, spec = max(waits, key=lambda item: item[0])
            return StepResult.deferred(wait, f"rate limit {spec.key}: {spec.rate:g}/s")
        for spec in specs:
            bucket = taken[spec.key][0]
            RateLimit.objects.filter(pk=rows[spec.key].pk).update(
                tokens=bucket.tokens, updated_at=bucket.updated_at, rate=spec.rate, burst=spec.burst
            )
    return None


def _locked_buckets(specs: list[RateSpec], now: datetime) -> dict[str, RateLimit]:
    keys = sorted(spec.key for spec in specs)  # one lock order everywhere: no deadlocks
    locked = RateLimit.objects.select_for_update().filter(key__in=keys).order_by("key")
    rows = {row.key: row for row in locked}
    missing = [spec for spec in specs if spec.key not in rows]
    if missing:
        # A new bucket starts full. ignore_conflicts: another worker may create it meanwhile.
        RateLimit.objects.bulk_create(
            [
                RateLimit(key=s.key, rate=s.rate, burst=s.burst, tokens=s.burst, updated_at=now)
                for s in missing
            ],
            ignore_conflicts=True,
        )
        rows = {row.key: row for row in locked.all()}
    for spec in specs:  # a lower burst in the settings applies at once
        rows[spec.key].tokens = min(rows[spec.key].tokens, spec.burst)
    return rows
