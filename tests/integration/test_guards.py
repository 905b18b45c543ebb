"""The guard around step attempts: circuit breakers and rate limits, on the real database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path

from runs.models import Event
from steps import guards
from steps.executors.base import StepContext, StepResult, Wait
from steps.executors.http import HttpExecutor
from steps.models import CircuitBreaker, Connector, RateLimit

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# Mounted here until orchestrator/api_urls.py includes steps.api_urls; then the first match wins.
urlpatterns = [
    path("api/v1/", include("steps.api_urls")),
    path("", include("orchestrator.urls")),
]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BREAKER = {"failure_threshold": 5, "success_threshold": 2, "open_timeout": 60}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def limits(settings) -> Any:
    def _set(rate_limits: dict[str, Any]) -> None:
        settings.FURROW = {**settings.FURROW, "RATE_LIMITS": rate_limits}

    return _set


def call_http(config: dict[str, Any], breaker: dict[str, Any] | None, now: datetime) -> StepResult:
    """What the worker does: ask the guard, run the real http executor, tell the guard."""
    refused = guards.admit("http", config, breaker=breaker, on_unhealthy=None, now=now)
    if refused is not None:
        return refused
    ctx = StepContext(run_id="r", step_name="s", attempt=1, config=config, timeout=5)
    result = HttpExecutor().run(ctx)
    guards.record("http", config, result, breaker=breaker, now=now)
    return result


def breaker_key(httpserver) -> str:
    return f"http:{httpserver.host}:{httpserver.port}"


# Circuit breakers


def test_five_server_errors_open_the_circuit_and_the_sixth_call_fails_fast(httpserver):
    httpserver.expect_request("/api").respond_with_data("down", status=503)
    config = {"url": httpserver.url_for("/api")}
    key = breaker_key(httpserver)

    for second in range(5):
        assert call_http(config, BREAKER, at(second)).error.startswith("HTTP 503")

    breaker = CircuitBreaker.objects.get(key=key)
    assert (breaker.state, breaker.failures, breaker.opened_at) == ("open", 5, at(4))
    assert breaker.last_failure.startswith("HTTP 503 from GET http://")
    result = call_http(config, BREAKER, at(34))
    assert result == StepResult.failure(
        f"circuit for {key} is open after 5 failures; failing fast (retry after 30s)",
        retryable=False,
    )
    assert len(httpserver.log) == 5
    [event] = Event.objects.filter(type="target.circuit_changed")
    assert event.data == {"key": key, "state": "open", "failures": 5}


def test_an_open_circuit_with_defer_puts_the_step_back_until_it_half_opens(httpserver):
    httpserver.expect_request("/api").respond_with_data("down", status=500)
    config = {"url": httpserver.url_for("/api")}
    policy = {**BREAKER, "on_open": "defer", "open_timeout": "2m"}
    for _ in range(5):
        call_http(config, policy, T0)

    result = guards.admit("http", config, breaker=policy, on_unhealthy=None, now=at(20))

    assert result.defer == 100
    assert result.ok is False
    assert result.error == (
        f"circuit for {breaker_key(httpserver)} is open after 5 failures; "
        "waiting 1m40s for it to half-open"
    )


def test_after_the_timeout_calls_go_through_half_open_and_two_successes_close_it(httpserver):
    httpserver.expect_ordered_request("/api").respond_with_data("down", status=500)
    config = {"url": httpserver.url_for("/api")}
    policy = {**BREAKER, "failure_threshold": 1}
    call_http(config, policy, T0)
    httpserver.expect_request("/api").respond_with_data("up")
    key = breaker_key(httpserver)

    assert call_http(config, policy, at(61)).ok
    assert CircuitBreaker.objects.get(key=key).state == "half_open"
    assert call_http(config, policy, at(62)).ok

    breaker = CircuitBreaker.objects.get(key=key)
    assert (breaker.state, breaker.failures, breaker.successes) == ("closed", 0, 0)
    states = [e.data["state"] for e in Event.objects.filter(type="target.circuit_changed")]
    assert states == ["open", "half_open", "closed"]


def test_client_errors_do_not_count_against_the_target(httpserver):
    httpserver.expect_request("/api").respond_with_data("no such thing", status=404)
    config = {"url": httpserver.url_for("/api")}

    for _ in range(10):
        assert not call_http(config, BREAKER, T0).ok

    assert not CircuitBreaker.objects.exists()


def test_a_refused_connection_counts_and_a_success_resets_the_count(httpserver):
    config = {"url": "http://127.0.0.1:9/nothing-listens"}
    for _ in range(3):
        assert "could not connect" in call_http(config, BREAKER, T0).error
    assert CircuitBreaker.objects.get(key="http:127.0.0.1:9").failures == 3

    ok = StepResult.success({"status": 200})
    guards.record("http", config, ok, breaker=BREAKER, now=T0)

    assert CircuitBreaker.objects.get(key="http:127.0.0.1:9").failures == 0


def test_a_waiting_http_async_step_counts_as_a_success_and_a_deferred_one_not_at_all():
    config = {"url": "http://callbacks.example/start"}
    guards.record("http_async", config, StepResult.failure("x"), breaker=BREAKER, now=T0)
    wait = Wait(kind="callback", until=None, on_due=StepResult.failure("late"))

    guards.record("http_async", config, StepResult.waiting(wait), breaker=BREAKER, now=T0)
    guards.record("http_async", config, StepResult.deferred(5, "later"), breaker=BREAKER, now=T0)

    assert CircuitBreaker.objects.get(key="http:callbacks.example:80").failures == 0


def test_a_connector_carries_a_default_breaker_keyed_by_its_name(httpserver):
    Connector.objects.create(
        name="billing",
        base_url=httpserver.url_for("/"),
        operations={"charge": {"path": "/charge"}},
        circuit_breaker={"failure_threshold": 2, "on_open": "fail"},
    )
    failed = StepResult.failure("HTTP 502", output={"status": 502})
    config = {"json": {}}
    for _ in range(2):
        assert (
            guards.admit("billing.charge", config, breaker=None, on_unhealthy=None, now=T0) is None
        )
        guards.record("billing.charge", config, failed, breaker=None, now=T0)

    result = guards.admit("billing.charge", config, breaker=None, on_unhealthy=None, now=T0)

    assert result.error == (
        "circuit for connector:billing is open after 2 failures; failing fast (retry after 1m)"
    )


def test_a_bad_breaker_policy_fails_the_step_with_the_reason():
    result = guards.admit(
        "http",
        {"url": "http://x.example"},
        breaker={"failure_threshold": 0},
        on_unhealthy=None,
        now=T0,
    )
    assert result.retryable is False
    assert result.error.startswith("invalid circuit_breaker at failure_threshold")


def test_a_bad_on_unhealthy_fails_the_step_with_the_reason():
    result = guards.admit("shell", {}, breaker=None, on_unhealthy="panic", now=T0)
    assert result == StepResult.failure(
        "on_unhealthy must be wait or fail, not 'panic'", retryable=False
    )


def test_a_step_with_nothing_to_guard_costs_no_query():
    config = {"url": "http://x.example/a", "run": "echo"}
    with CaptureQueriesContext(connection) as queries:
        for step_type in ("shell", "noop", "http", "http_async", "transform"):
            assert (
                guards.admit(step_type, config, breaker=None, on_unhealthy="wait", now=T0) is None
            )
            guards.record(step_type, config, StepResult.failure("boom"), breaker=None, now=T0)
        # A breaker on a step with no target (a shell step) has nothing to key on.
        assert guards.admit("shell", config, breaker=BREAKER, on_unhealthy=None, now=T0) is None
    assert queries.captured_queries == []


# The breaker API


def test_the_breakers_are_listed_and_staff_can_reset_one(api, client, bob, httpserver):
    httpserver.expect_request("/api").respond_with_data("down", status=500)
    for _ in range(5):
        call_http({"url": httpserver.url_for("/api")}, BREAKER, T0)
    key = breaker_key(httpserver)

    listed = api.get("/api/v1/circuit-breakers").json()["results"]
    assert [(b["key"], b["state"], b["failures"]) for b in listed] == [(key, "open", 5)]

    client.force_login(bob)
    refused = client.post(f"/api/v1/circuit-breakers/{key}/reset")
    assert refused.status_code == 403
    assert refused.json() == {"message": "only staff may reset a circuit breaker"}
    assert CircuitBreaker.objects.get(key=key).state == "open"

    response = api.post(f"/api/v1/circuit-breakers/{key}/reset")
    assert response.status_code == 200
    assert response.json()["state"] == "closed"
    breaker = CircuitBreaker.objects.get(key=key)
    assert (breaker.state, breaker.failures, breaker.opened_at) == ("closed", 0, None)
    event = Event.objects.filter(type="target.circuit_changed").last()
    assert (event.actor, event.data["state"]) == ("user:alice", "closed")
    assert call_http({"url": httpserver.url_for("/api")}, BREAKER, T0).error.startswith("HTTP 500")


def test_resetting_an_unknown_breaker_is_a_404(api):
    response = api.post("/api/v1/circuit-breakers/http:nowhere:80/reset")
    assert response.status_code == 404
    assert response.json() == {"message": "unknown circuit breaker 'http:nowhere:80'"}


def test_the_admin_lists_breakers_and_resets_them_with_an_action(client, alice):
    CircuitBreaker.objects.create(key="connector:web", state="open", failures=5, opened_at=T0)
    client.force_login(alice)
    assert client.get("/admin/steps/circuitbreaker/").status_code == 200

    response = client.post(
        "/admin/steps/circuitbreaker/",
        {"action": "reset", "_selected_action": [CircuitBreaker.objects.get().pk]},
    )

    assert response.status_code == 302
    assert CircuitBreaker.objects.get().state == "closed"


# Rate limits


def test_at_one_request_a_second_the_second_call_waits_a_second(limits):
    limits({"http": 1})
    config = {"url": "http://x.example/a"}

    assert guards.admit("http", config, breaker=None, on_unhealthy=None, now=T0) is None
    second = guards.admit("http", config, breaker=None, on_unhealthy=None, now=T0)
    assert second == StepResult.deferred(1.0, "rate limit http: 1/s")
    assert guards.admit("http", config, breaker=None, on_unhealthy=None, now=at(0.4)).defer == (
        pytest.approx(0.6)
    )
    assert guards.admit("http", config, breaker=None, on_unhealthy=None, now=at(1)) is None

    bucket = RateLimit.objects.get(key="http")
    assert (bucket.rate, bucket.burst, bucket.tokens, bucket.updated_at) == (1, 1, 0, at(1))


def test_a_refused_call_takes_no_token_from_its_other_buckets(limits):
    limits({"http": {"rate": 1, "burst": 5}, "http:slow.example:443": 1})
    slow, other = {"url": "https://slow.example/x"}, {"url": "https://other.example/x"}

    assert guards.admit("http", slow, breaker=None, on_unhealthy=None, now=T0) is None
    refused = guards.admit("http", slow, breaker=None, on_unhealthy=None, now=T0)

    assert refused.error == "rate limit http:slow.example:443: 1/s"
    assert RateLimit.objects.get(key="http").tokens == 4
    for _ in range(4):
        assert guards.admit("http", other, breaker=None, on_unhealthy=None, now=T0) is None
    assert guards.admit("http", other, breaker=None, on_unhealthy=None, now=T0).defer == 1.0


def test_a_connector_rate_limit_applies_to_all_its_operations(httpserver):
    Connector.objects.create(
        name="search",
        base_url="https://search.example",
        operations={"web": {"path": "/w"}, "news": {"path": "/n"}},
        rate_limit=0.5,
    )

    assert guards.admit("search.web", {}, breaker=None, on_unhealthy=None, now=T0) is None
    refused = guards.admit("search.news", {}, breaker=None, on_unhealthy=None, now=T0)

    assert refused == StepResult.deferred(2.0, "rate limit connector:search: 0.5/s")


def test_a_limit_by_step_type_applies_to_shell_steps_too(limits):
    limits({"shell": 2})
    admitted = [
        guards.admit("shell", {"run": "x"}, breaker=None, on_unhealthy=None, now=T0)
        for _ in range(3)
    ]
    assert admitted[:2] == [None, None]
    assert admitted[2].defer == 0.5


@pytest.mark.django_db(transaction=True)
def test_concurrent_admits_from_many_workers_never_exceed_the_burst(limits):
    limits({"connector:busy": {"rate": 0.001, "burst": 3}, "shell": {"rate": 0.001, "burst": 3}})
    start = threading.Barrier(8, timeout=30)
    results: list[StepResult | None] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            start.wait()
            for _ in range(4):
                result = guards.admit("shell", {}, breaker=None, on_unhealthy=None, now=T0)
                with lock:
                    results.append(result)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 32
    assert sum(result is None for result in results) == 3
    assert RateLimit.objects.get(key="shell").tokens == pytest.approx(0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_from_many_workers_are_all_counted():
    policy = {"failure_threshold": 1000}
    config = {"url": "http://flaky.example/x"}
    failed = StepResult.failure("could not connect to http://flaky.example/x")
    start = threading.Barrier(8, timeout=30)

    def worker() -> None:
        try:
            start.wait()
            for _ in range(5):
                guards.record("http", config, failed, breaker=policy, now=T0)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    breaker = CircuitBreaker.objects.get(key="http:flaky.example:80")
    assert (breaker.state, breaker.failures) == ("closed", 40)
