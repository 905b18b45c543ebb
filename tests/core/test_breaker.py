"""Circuit breaker transitions, token buckets and target keys: the pure rules, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.resilience_rules import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    Bucket,
    OnOpen,
    RateSpec,
    admit_call,
    after_call,
    counts_as_failure,
    http_target_key,
    parse_rate_limits,
    take_token,
)
from tests.core.test_architecture import imported_modules, is_banned

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=3, success_threshold=2, open_timeout=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def calls(
    breaker: Breaker, outcomes: str, now: datetime, policy: BreakerPolicy = POLICY
) -> Breaker:
    """Apply "ffs..." (f: failure, s: success) at `now`."""
    for outcome in outcomes:
        breaker = after_call(breaker, policy, outcome == "s", now)
    return breaker


@pytest.mark.parametrize("module", ["steps/resilience_rules.py", "steps/executors/connector.py"])
def test_the_rules_import_no_django(module):
    source = (Path(__file__).resolve().parents[2] / module).read_text(encoding="utf-8")
    assert [name for name in imported_modules(source) if is_banned(name)] == []


# Transitions


def test_a_closed_breaker_opens_after_the_threshold_of_consecutive_failures():
    assert calls(Breaker(), "ff", T0) == Breaker(BreakerState.CLOSED, failures=2)
    assert calls(Breaker(), "fff", T0) == Breaker(BreakerState.OPEN, 3, 0, T0)


def test_a_success_resets_the_consecutive_failures():
    assert calls(Breaker(), "ffsff", T0) == Breaker(BreakerState.CLOSED, failures=2)


def test_an_open_breaker_refuses_calls_until_the_timeout_then_half_opens():
    opened = calls(Breaker(), "fff", T0)

    refused = admit_call(opened, POLICY, at(45))
    assert not refused.allowed
    assert refused.retry_after == 15
    assert refused.breaker == opened

    allowed = admit_call(opened, POLICY, at(60))
    assert allowed.allowed
    assert allowed.breaker == Breaker(BreakerState.HALF_OPEN, 3, 0, T0)


def test_a_half_open_breaker_closes_after_the_threshold_of_successes():
    half_open = admit_call(calls(Breaker(), "fff", T0), POLICY, at(61)).breaker
    once = calls(half_open, "s", at(61))
    assert once.state is BreakerState.HALF_OPEN
    assert once.successes == 1
    assert calls(once, "s", at(62)) == Breaker()


def test_a_half_open_breaker_opens_again_on_a_failure_with_a_new_timeout():
    half_open = admit_call(calls(Breaker(), "fff", T0), POLICY, at(61)).breaker
    reopened = calls(half_open, "sf", at(70))
    assert reopened == Breaker(BreakerState.OPEN, 4, 0, at(70))
    assert admit_call(reopened, POLICY, at(100)).retry_after == 30


def test_the_transition_to_half_open_happens_on_a_late_call_result_too():
    # No call asked for admission after the timeout; the next result still sees half-open.
    opened = calls(Breaker(), "fff", T0)
    assert calls(opened, "s", at(61)) == Breaker(BreakerState.HALF_OPEN, 3, 1, T0)


def test_results_of_calls_let_through_before_it_opened_do_not_move_an_open_breaker():
    opened = calls(Breaker(), "fff", T0)
    assert calls(opened, "s", at(10)) == opened
    assert calls(opened, "f", at(10)) == Breaker(BreakerState.OPEN, 4, 0, T0)


def test_a_policy_from_a_definition_takes_durations_and_defaults():
    assert BreakerPolicy.from_mapping({}) == BreakerPolicy(5, 2, 60.0, OnOpen.FAIL)
    assert BreakerPolicy.from_mapping({"open_timeout": "2m", "on_open": "defer"}) == BreakerPolicy(
        5, 2, 120.0, OnOpen.DEFER
    )


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"failure_threshold": 0}, "invalid circuit_breaker at failure_threshold: 0 is less than"),
        ({"on_open": "explode"}, "invalid circuit_breaker at on_open: 'explode' is not one of"),
        ({"open_timeout": "soon"}, "invalid circuit_breaker at open_timeout"),
        ({"timeout": 60000}, "invalid circuit_breaker: Additional properties are not allowed"),
    ],
)
def test_a_bad_policy_is_refused_with_the_key_at_fault(policy, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        BreakerPolicy.from_mapping(policy)


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        (None, True),
        ({}, True),
        ({"status": 500}, True),
        ({"status": 503}, True),
        ({"status": 404}, False),
        ({"status": 429}, False),
    ],
)
def test_only_transport_failures_and_5xx_count_against_the_target(output, counts):
    assert counts_as_failure(output) is counts


policies = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(1, 6),
    success_threshold=st.integers(1, 4),
    open_timeout=st.floats(1, 120),
)
events = st.lists(st.tuples(st.booleans(), st.floats(0, 90)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(policy=policies, events=events)
def test_random_call_sequences_keep_the_breaker_consistent(policy, events):
    breaker, now, streak = Breaker(), T0, 0
    for ok, wait in events:
        now += timedelta(seconds=wait)
        admission = admit_call(breaker, policy, now)
        if not admission.allowed:
            assert breaker.state is BreakerState.OPEN
            assert 0 < admission.retry_after <= policy.open_timeout
            continue
        before = admission.breaker
        # Consecutive failures while closed; a breaker that closes again starts from none.
        streak = (0 if ok else streak + 1) if before.state is BreakerState.CLOSED else 0
        breaker = after_call(before, policy, ok, now)
        _check_invariants(breaker, policy, now)
        if before.state is BreakerState.CLOSED:
            # Closed opens exactly when the consecutive failures reach the threshold.
            assert (breaker.state is BreakerState.OPEN) == (streak >= policy.failure_threshold)
        if before.state is BreakerState.HALF_OPEN and not ok:
            assert breaker.state is BreakerState.OPEN
            assert breaker.opened_at == now


def _check_invariants(breaker: Breaker, policy: BreakerPolicy, now: datetime) -> None:
    assert breaker.failures >= 0
    assert breaker.successes >= 0
    if breaker.state is BreakerState.CLOSED:
        assert breaker.failures < policy.failure_threshold
        assert breaker.successes == 0
        assert breaker.opened_at is None
    else:
        assert breaker.opened_at is not None
        assert breaker.opened_at <= now
    if breaker.state is BreakerState.HALF_OPEN:
        assert breaker.successes < policy.success_threshold
    if breaker.state is BreakerState.OPEN:
        assert breaker.successes == 0


# Token buckets


def test_a_full_bucket_gives_its_burst_then_one_token_per_interval():
    bucket = Bucket(tokens=2, updated_at=T0)
    bucket, wait = take_token(bucket, rate=1, burst=2, now=T0)
    assert wait == 0
    bucket, wait = take_token(bucket, rate=1, burst=2, now=T0)
    assert wait == 0
    refused, wait = take_token(bucket, rate=1, burst=2, now=T0)
    assert wait == 1.0
    assert refused.tokens == 0
    bucket, wait = take_token(refused, rate=1, burst=2, now=at(0.25))
    assert wait == pytest.approx(0.75)
    assert take_token(bucket, rate=1, burst=2, now=at(1))[1] == 0


def test_a_bucket_refills_at_most_to_its_burst():
    bucket, wait = take_token(Bucket(0, T0), rate=2, burst=3, now=at(3600))
    assert wait == 0
    assert bucket == Bucket(2, at(3600))


def test_a_clock_running_behind_neither_refills_nor_moves_the_bucket_back():
    bucket, _ = take_token(Bucket(0.5, at(10)), rate=1, burst=1, now=at(5))
    assert bucket == Bucket(0.5, at(10))


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=80),
)
def test_a_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps):
    bucket, now, granted = Bucket(float(burst), T0), T0, 0
    for gap in gaps:
        now += timedelta(seconds=gap)
        bucket, wait = take_token(bucket, rate, burst, now)
        granted += wait == 0
        assert 0 <= bucket.tokens <= burst
        elapsed = (now - T0).total_seconds()
        assert granted <= burst + rate * elapsed + 1e-6


def test_rate_limits_from_settings_take_a_number_or_a_rate_and_burst():
    assert parse_rate_limits({"http": 20, "connector:web": {"rate": 0.5, "burst": 3}}) == {
        "http": RateSpec("http", 20.0, 20.0),
        "connector:web": RateSpec("connector:web", 0.5, 3.0),
    }
    assert parse_rate_limits({"shell": 0.2})["shell"].burst == 1.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"http": 0}, "rate limit 'http': the rate must be a number above 0, not 0"),
        ({"http": "fast"}, "rate limit 'http': the rate must be a number above 0, not 'fast'"),
        ({"http": True}, "rate limit 'http': the rate must be a number above 0, not True"),
        (
            {"http": {"rate": 1, "burst": 0.5}},
            "rate limit 'http': the burst must be a number of at least 1",
        ),
    ],
)
def test_a_bad_rate_limit_setting_is_refused(raw, message):
    with pytest.raises(ValueError, match="^" + message):
        parse_rate_limits(raw)


# Target keys


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://api.example.com/v1/x?q=1", "http:api.example.com:80"),
        ("HTTPS://API.Example.com/v1", "http:api.example.com:443"),
        ("http://user:pw@127.0.0.1:8080/", "http:127.0.0.1:8080"),
        ("http://[::1]:9000/health", "http:[::1]:9000"),
        ("ftp://example.com/", None),
        ("http://example.com:port/", None),
        ("not a url", None),
        (None, None),
    ],
)
def test_http_targets_are_keyed_by_host_and_port(url, key):
    assert http_target_key(url) == key
