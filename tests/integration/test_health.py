"""Health checks of targets (Spuds): probing, events on change, the guard's on_unhealthy, the API."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import include, path
from werkzeug import Response

from runs.models import Event
from steps import guards, health
from steps.executors.base import StepResult
from steps.models import Connector, TargetHealth

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# Mounted here until orchestrator/api_urls.py includes steps.api_urls; then the first match wins.
urlpatterns = [
    path("api/v1/", include("steps.api_urls")),
    path("", include("orchestrator.urls")),
]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/health"  # nothing listens now that the socket is closed


def register(url: str, key: str = "http:svc.example:80") -> TargetHealth:
    return health.register_target(key, url, T0)


def events() -> list[dict[str, Any]]:
    return [e.data for e in Event.objects.filter(type="target.health_changed").order_by("id")]


# Probing


def test_a_target_answering_200_is_healthy_and_the_change_is_an_event(httpserver):
    httpserver.expect_request("/health").respond_with_data("ok")
    register(httpserver.url_for("/health"))

    assert health.probe_due(T0) == 1

    target = TargetHealth.objects.get()
    assert (target.status, target.error, target.checked_at) == ("healthy", "", T0)
    assert target.next_check_at == at(30)
    assert events() == [{"key": "http:svc.example:80", "status": "healthy", "error": ""}]


def test_a_server_error_is_unhealthy_with_its_status(httpserver):
    httpserver.expect_request("/health").respond_with_data("oops", status=500)
    register(httpserver.url_for("/health"))

    health.probe_due(T0)

    target = TargetHealth.objects.get()
    assert (target.status, target.error) == ("unhealthy", "HTTP 500")


def test_a_refused_connection_is_unhealthy_with_the_error_text(closed_port_url):
    register(closed_port_url)

    health.probe_due(T0)

    target = TargetHealth.objects.get()
    assert target.status == "unhealthy"
    assert target.error.startswith(f"could not connect to {closed_port_url}")


def test_an_event_is_recorded_only_when_the_status_changes(httpserver):
    statuses = iter([200, 200, 503, 502, 200])
    httpserver.expect_request("/health").respond_with_handler(
        lambda request: Response("x", status=next(statuses))
    )
    register(httpserver.url_for("/health"))

    for second in range(0, 150, 30):
        assert health.probe_due(at(second)) == 1

    assert [(e["status"], e["error"]) for e in events()] == [
        ("healthy", ""),
        ("unhealthy", "HTTP 503"),
        ("healthy", ""),
    ]
    assert TargetHealth.objects.get().checked_at == at(120)


def test_a_target_is_probed_only_when_due(httpserver):
    httpserver.expect_request("/health").respond_with_data("ok")
    register(httpserver.url_for("/health"))

    assert health.probe_due(T0) == 1
    assert health.probe_due(at(29)) == 0
    assert health.probe_due(at(30)) == 1
    assert len(httpserver.log) == 2


def test_a_recent_successful_call_counts_as_healthy_without_a_probe(httpserver):
    register(httpserver.url_for("/health"))
    config = {"url": "http://svc.example/api", "health_check": httpserver.url_for("/health")}
    guards.record("http", config, StepResult.success({"status": 200}), breaker=None, now=at(-10))

    assert health.probe_due(T0) == 1

    assert httpserver.log == []
    target = TargetHealth.objects.get()
    assert (target.status, target.last_success_at) == ("healthy", at(-10))


def test_probing_returns_within_the_timeout_even_when_a_target_hangs(httpserver, settings):
    settings.FURROW = {**settings.FURROW, "HEALTH_TIMEOUT": 0.3}
    httpserver.expect_request("/fast").respond_with_data("ok")
    register(httpserver.url_for("/fast"), "http:fast:80")
    with socket.socket() as silent:  # takes connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        register(f"http://127.0.0.1:{silent.getsockname()[1]}/health", "http:slow:80")

        started = time.monotonic()
        assert health.probe_due(T0) == 2
        elapsed = time.monotonic() - started

    assert elapsed < 0.3 + 1.5
    statuses = dict(TargetHealth.objects.values_list("key", "status"))
    assert statuses == {"http:fast:80": "healthy", "http:slow:80": "unhealthy"}
    assert "0.3s" in TargetHealth.objects.get(key="http:slow:80").error


def test_connectors_with_a_health_url_are_checked_and_dropped_when_removed(httpserver):
    httpserver.expect_request("/healthz").respond_with_data("ok")
    connector = Connector.objects.create(
        name="billing",
        base_url=httpserver.url_for("/"),
        health_url=httpserver.url_for("/healthz"),
        operations={"charge": {"path": "/c"}},
    )

    assert health.probe_due(T0) == 1
    assert TargetHealth.objects.get().key == "connector:billing"
    assert TargetHealth.objects.get().status == "healthy"

    connector.delete()
    health.probe_due(at(1))

    assert not TargetHealth.objects.exists()


# The guard


@pytest.fixture
def unhealthy(closed_port_url) -> dict[str, Any]:
    """An http step's config whose health check fails."""
    config = {"url": "http://svc.example/api", "health_check": closed_port_url}
    assert guards.admit("http", config, breaker=None, on_unhealthy=None, now=T0) is None
    health.probe_due(T0)
    assert TargetHealth.objects.get().status == "unhealthy"
    return config


def test_a_step_that_waits_on_an_unhealthy_target_is_deferred_until_the_next_check(unhealthy):
    result = guards.admit("http", unhealthy, breaker=None, on_unhealthy="wait", now=at(10))

    assert result.defer == 20.5
    assert result.error.startswith("target http:svc.example:80 is unhealthy: could not connect to")
    assert result.error.endswith("; waiting")


def test_a_step_that_fails_on_an_unhealthy_target_fails_and_may_be_retried(unhealthy):
    result = guards.admit("http", unhealthy, breaker=None, on_unhealthy="fail", now=at(10))

    assert result.ok is False
    assert result.retryable is True
    assert result.defer is None
    assert result.error.startswith("target http:svc.example:80 is unhealthy: could not connect")


def test_by_default_a_step_runs_whatever_the_health(unhealthy):
    assert guards.admit("http", unhealthy, breaker=None, on_unhealthy=None, now=at(10)) is None


def test_an_unknown_target_does_not_hold_a_step_back(httpserver):
    config = {"url": "http://svc.example/api", "health_check": httpserver.url_for("/h")}

    assert guards.admit("http", config, breaker=None, on_unhealthy="fail", now=T0) is None
    assert TargetHealth.objects.get().status == "unknown"


def test_a_health_check_that_is_not_http_fails_the_step():
    config = {"url": "http://svc.example/api", "health_check": "file:///etc/passwd"}

    result = guards.admit("http", config, breaker=None, on_unhealthy=None, now=T0)

    assert result == StepResult.failure(
        "invalid config at health_check: url must be http or https: 'file:///etc/passwd'",
        retryable=False,
    )


# API and admin


def test_the_api_lists_targets_and_shows_one(api, httpserver):
    httpserver.expect_request("/health").respond_with_data("no", status=503)
    register(httpserver.url_for("/health"))
    health.probe_due(T0)

    listed = api.get("/api/v1/health")
    detail = api.get("/api/v1/health/http:svc.example:80")

    assert listed.status_code == 200
    [item] = listed.json()["results"]
    assert item == detail.json()
    assert item["key"] == "http:svc.example:80"
    assert item["url"] == httpserver.url_for("/health")
    assert (item["status"], item["error"]) == ("unhealthy", "HTTP 503")
    assert item["checked_at"] == "2026-01-01T12:00:00Z"
    assert item["last_success_at"] is None


def test_an_unknown_target_is_a_clear_404(api):
    response = api.get("/api/v1/health/http:nowhere:80")

    assert response.status_code == 404
    assert response.json()["message"].startswith("no health checks for target 'http:nowhere:80'")


def test_the_connector_api_shows_its_health(api, httpserver):
    httpserver.expect_request("/healthz").respond_with_data("ok")
    Connector.objects.create(
        name="billing",
        base_url=httpserver.url_for("/"),
        health_url=httpserver.url_for("/healthz"),
        operations={"charge": {"path": "/c"}},
    )
    health.probe_due(T0)

    body = api.get("/api/v1/connectors/billing").json()

    assert body["health"]["status"] == "healthy"


def test_the_admin_checks_a_connector_now(client, alice, httpserver):
    httpserver.expect_request("/healthz").respond_with_data("down", status=500)
    connector = Connector.objects.create(
        name="billing",
        base_url=httpserver.url_for("/"),
        health_url=httpserver.url_for("/healthz"),
        operations={"charge": {"path": "/c"}},
    )
    client.force_login(alice)

    response = client.post(
        "/admin/steps/connector/",
        {"action": "check_health_now", "_selected_action": [connector.pk]},
    )

    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "connector:billing is unhealthy: HTTP 500"
    ]
    assert TargetHealth.objects.get().status == "unhealthy"
    for page in (
        "/admin/steps/connector/",
        "/admin/steps/targethealth/",
        "/admin/steps/ratelimit/",
    ):
        assert client.get(page).status_code == 200
