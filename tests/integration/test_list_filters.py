"""Query parameters of the workflow, version, grant, hook, delivery, secret, breaker and health
lists (flows/filters.py, runs/hook_filters.py, steps/filters.py): each filters and orders, and
refuses an ordering or a value it cannot take with a 400 naming the parameter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from flows import access
from flows import services as flow_services
from flows.models import Workflow, WorkflowGrant, WorkflowVersion
from runs import services
from runs.models import Event, HookDelivery, HookEndpoint
from steps import secrets
from steps.models import CircuitBreaker, Secret, TargetHealth

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
LONG_AGO = NOW - timedelta(days=30)


def rows(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


def names(response: Any, key: str = "name") -> list[Any]:
    return [row[key] for row in rows(response)]


def assert_bad(response: Any, parameter: str, message: str | None = None) -> None:
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert [e["path"] for e in errors] == [parameter]
    if message is not None:
        assert errors[0]["message"] == message


def at(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def flow(name: str, description: str = "", step: str = "a") -> dict[str, Any]:
    return {"name": name, "description": description, "steps": {step: {"type": "noop"}}}


LISTS = [
    "/api/v1/workflows",
    "/api/v1/workflows/deploy/versions",
    "/api/v1/workflows/deploy/grants",
    "/api/v1/hooks",
    "/api/v1/hooks/audit/deliveries",
    "/api/v1/secrets",
    "/api/v1/circuit-breakers",
    "/api/v1/health",
]


@pytest.fixture
def deploy_and_audit(publish) -> None:
    """What the paths in LISTS name."""
    publish(flow("deploy"))
    HookEndpoint.objects.create(name="audit", url="https://hooks.example/a", event_types=["*"])


@pytest.mark.parametrize("path", LISTS)
def test_ordering_by_a_field_a_list_does_not_offer_is_a_400_naming_it(api, deploy_and_audit, path):
    assert_bad(api.get(f"{path}?ordering=ciphertext"), "ordering")
    assert_bad(api.get(f"{path}?ordering=-nope,created_at"), "ordering")


@pytest.mark.parametrize("path", LISTS)
def test_every_list_is_still_paged(api, deploy_and_audit, path):
    body = api.get(f"{path}?limit=1&offset=0").json()
    assert set(body) >= {"count", "next", "previous", "results"}


# Workflows


@pytest.fixture
def workflows(publish) -> dict[str, Workflow]:
    made = {
        "billing": publish(flow("billing", "Monthly invoices")),
        "deploy": publish(flow("deploy", "Ship the app")),
        "etl": publish(flow("etl", "Nightly load of invoices")),
    }
    Workflow.objects.filter(name="etl").update(paused=True)
    Workflow.objects.filter(name="billing").update(created_at=LONG_AGO, updated_at=LONG_AGO)
    return made


def test_workflows_come_by_name_and_can_be_ordered_otherwise(api, workflows):
    assert names(api.get("/api/v1/workflows")) == ["billing", "deploy", "etl"]
    assert names(api.get("/api/v1/workflows?ordering=-name")) == ["etl", "deploy", "billing"]
    assert names(api.get("/api/v1/workflows?ordering=-created_at,name"))[-1] == "billing"


def test_workflows_filter_by_words_paused_and_time(api, workflows):
    assert names(api.get("/api/v1/workflows?search=INVOICE")) == ["billing", "etl"]
    assert names(api.get("/api/v1/workflows?search=dep")) == ["deploy"]
    assert names(api.get("/api/v1/workflows?paused=true")) == ["etl"]
    assert names(api.get("/api/v1/workflows?paused=0")) == ["billing", "deploy"]
    since = at(NOW - timedelta(days=1))
    assert names(api.get(f"/api/v1/workflows?created_before={since}")) == ["billing"]
    assert names(api.get(f"/api/v1/workflows?updated_after={since}")) == ["deploy", "etl"]


def test_workflow_filters_still_show_only_what_the_user_may_view(workflows, bob):
    WorkflowGrant.objects.create(workflow=workflows["etl"], role="view", user=bob)
    access.forget(bob)
    client = APIClient()
    client.force_authenticate(bob)

    assert names(client.get("/api/v1/workflows?search=invoice")) == ["etl"]
    assert names(client.get("/api/v1/workflows?paused=false")) == []


def test_workflow_filters_refuse_what_they_cannot_take(api):
    assert_bad(
        api.get("/api/v1/workflows?paused=yes"), "paused", "must be one of true, 1, false, 0"
    )
    assert_bad(api.get("/api/v1/workflows?created_after=yesterday"), "created_after")
    assert_bad(api.get("/api/v1/workflows?updated_before=2020-13-01"), "updated_before")
    assert_bad(api.get("/api/v1/workflows?search=a%00b"), "search")


# Versions


@pytest.fixture
def versions(alice, bob) -> list[WorkflowVersion]:
    made = [
        flow_services.publish(flow("deploy", step=step), user=user).version
        for step, user in (("a", alice), ("b", bob), ("c", alice))
    ]
    WorkflowVersion.objects.filter(pk=made[0].pk).update(created_at=LONG_AGO)
    return made


def test_versions_come_newest_first_and_can_be_ordered_by_version(api, versions):
    path = "/api/v1/workflows/deploy/versions"
    assert names(api.get(path), "version") == [3, 2, 1]
    assert names(api.get(f"{path}?ordering=version"), "version") == [1, 2, 3]
    assert names(api.get(f"{path}?ordering=created_at"), "version") == [1, 2, 3]


def test_versions_filter_by_publisher_and_time(api, versions):
    path = "/api/v1/workflows/deploy/versions"
    assert names(api.get(f"{path}?created_by=alice"), "version") == [3, 1]
    assert names(api.get(f"{path}?created_by=charlie"), "version") == []
    day_ago = at(NOW - timedelta(days=1))
    assert names(api.get(f"{path}?created_after={day_ago}"), "version") == [3, 2]
    assert names(api.get(f"{path}?created_before={day_ago}"), "version") == [1]
    assert_bad(api.get(f"{path}?created_before=soon"), "created_before")
    assert api.get("/api/v1/workflows/nope/versions?ordering=version").status_code == 404


# Grants


@pytest.fixture
def grants(publish, bob, charlie_user) -> None:
    deploy = publish(flow("deploy"))
    ops = Group.objects.create(name="ops")
    WorkflowGrant.objects.create(workflow=deploy, role="run", user=bob)
    WorkflowGrant.objects.create(workflow=deploy, role="view", user=charlie_user)
    WorkflowGrant.objects.create(workflow=deploy, role="edit", group=ops)


@pytest.fixture
def charlie_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie", "c@example.com", "charlie-pw")


def roles(response: Any) -> list[str]:
    return names(response, "role")


def test_grants_come_by_role_and_filter_by_role_user_and_group(api, grants):
    path = "/api/v1/workflows/deploy/grants"
    assert roles(api.get(path)) == ["edit", "run", "view"]
    assert roles(api.get(f"{path}?ordering=-role")) == ["view", "run", "edit"]
    assert roles(api.get(f"{path}?role=view")) == ["view"]
    assert roles(api.get(f"{path}?user=bob")) == ["run"]
    assert roles(api.get(f"{path}?group=ops")) == ["edit"]
    assert_bad(api.get(f"{path}?role=own"), "role", "must be one of view, run, edit, approve")


# Hooks and their deliveries


@pytest.fixture
def hooks_and_deliveries(publish) -> dict[str, Any]:
    deploy = publish(flow("deploy"))
    run = services.start_run(deploy, {})
    audit = HookEndpoint.objects.create(
        name="audit", url="https://hooks.example/a", event_types=["run.*", "step.failed"]
    )
    HookEndpoint.objects.create(
        name="pager", url="https://hooks.example/p", event_types=["step.failed"], enabled=False
    )
    HookEndpoint.objects.create(name="all", url="https://hooks.example/x", event_types=["*"])
    events = [
        Event.objects.create(type="run.running", run=run),
        Event.objects.create(type="step.failed", run=run),
        Event.objects.create(type="workflow.published", workflow=deploy),
    ]
    deliveries = [HookDelivery.objects.create(endpoint=audit, event=e) for e in events]
    HookDelivery.objects.filter(pk=deliveries[1].pk).update(status="failed")
    HookDelivery.objects.filter(pk=deliveries[0].pk).update(created_at=LONG_AGO)
    return {"run": run, "deliveries": [d.pk for d in deliveries]}


def test_hooks_come_by_name_and_filter_by_enabled_and_event(api, hooks_and_deliveries):
    assert names(api.get("/api/v1/hooks")) == ["all", "audit", "pager"]
    assert names(api.get("/api/v1/hooks?ordering=-name")) == ["pager", "audit", "all"]
    assert names(api.get("/api/v1/hooks?enabled=false")) == ["pager"]
    assert names(api.get("/api/v1/hooks?event=step.failed")) == ["all", "audit", "pager"]
    assert names(api.get("/api/v1/hooks?event=run.running&enabled=1")) == ["all", "audit"]
    assert names(api.get("/api/v1/hooks?event=approval.decided")) == ["all"]
    assert names(api.get("/api/v1/hooks?source=settings")) == []
    assert_bad(api.get("/api/v1/hooks?enabled=on"), "enabled")
    assert_bad(api.get("/api/v1/hooks?event=run.*"), "event")
    assert_bad(api.get("/api/v1/hooks?source=web"), "source", "must be one of admin, settings")


def test_deliveries_come_newest_first_and_filter_by_status_event_run_and_time(
    api, hooks_and_deliveries
):
    first, second, third = hooks_and_deliveries["deliveries"]
    path = "/api/v1/hooks/audit/deliveries"
    assert names(api.get(path), "id") == [third, second, first]
    assert names(api.get(f"{path}?ordering=created_at"), "id")[0] == first
    assert names(api.get(f"{path}?status=failed"), "id") == [second]
    assert names(api.get(f"{path}?event=run.*"), "id") == [first]
    assert names(api.get(f"{path}?event=step.failed"), "id") == [second]
    assert names(api.get(f"{path}?run={hooks_and_deliveries['run'].pk}"), "id") == [second, first]
    assert names(api.get(f"{path}?workflow=deploy"), "id") == [third, second, first]
    day_ago = at(NOW - timedelta(days=1))
    assert names(api.get(f"{path}?created_after={day_ago}"), "id") == [third, second]
    assert names(api.get(f"{path}?created_before={day_ago}"), "id") == [first]
    assert names(api.get("/api/v1/hooks/pager/deliveries"), "id") == []


def test_delivery_filters_refuse_what_they_cannot_take(api, hooks_and_deliveries):
    path = "/api/v1/hooks/audit/deliveries"
    assert_bad(
        api.get(f"{path}?status=lost"), "status", "must be one of pending, delivered, failed"
    )
    assert_bad(api.get(f"{path}?run=42"), "run", "must be a run id")
    assert_bad(api.get(f"{path}?created_after=2020-01-01T25:00:00"), "created_after")
    # An offset PostgreSQL cannot hold is converted to UTC first (runs.audit_api).
    assert len(rows(api.get(f"{path}?created_after=2020-01-01T00:00:00%2B20:06"))) == 3
    assert api.get("/api/v1/hooks/nope/deliveries?status=failed").status_code == 404


def test_hook_lists_stay_staff_only_whatever_the_filters(bob, hooks_and_deliveries):
    client = APIClient()
    client.force_authenticate(bob)
    assert client.get("/api/v1/hooks?enabled=true").status_code == 403
    assert client.get("/api/v1/hooks/audit/deliveries?status=failed").status_code == 403


# Secrets


@pytest.fixture
def some_secrets(alice) -> None:
    secrets.set_secret("DB_PASSWORD", "x", description="The database", user=alice)
    secrets.set_secret("API_TOKEN", "y", description="Payments API", user=alice)
    secrets.set_secret("SMTP_KEY", "z", user=alice)
    Secret.objects.filter(name="SMTP_KEY").update(updated_at=LONG_AGO)


def test_secrets_come_by_name_and_filter_by_words(api, some_secrets):
    assert names(api.get("/api/v1/secrets")) == ["API_TOKEN", "DB_PASSWORD", "SMTP_KEY"]
    assert names(api.get("/api/v1/secrets?ordering=updated_at"))[0] == "SMTP_KEY"
    assert names(api.get("/api/v1/secrets?search=db_")) == ["DB_PASSWORD"]
    assert names(api.get("/api/v1/secrets?search=api")) == ["API_TOKEN"]
    assert names(api.get("/api/v1/secrets?search=payments")) == ["API_TOKEN"]
    assert_bad(api.get("/api/v1/secrets?search=%00"), "search")


# Circuit breakers and target health


@pytest.fixture
def targets() -> None:
    for key, state, failures in (
        ("connector:crm", "open", 5),
        ("http:api.example:443", "closed", 0),
        ("http:slow.example:80", "half_open", 2),
    ):
        CircuitBreaker.objects.create(key=key, state=state, failures=failures)
    for key, status in (
        ("connector:crm", "unhealthy"),
        ("http:api.example:443", "healthy"),
        ("http:slow.example:80", "unknown"),
    ):
        TargetHealth.objects.create(key=key, url=f"https://{key}/health", status=status)


def keys(response: Any) -> list[str]:
    return names(response, "key")


def test_breakers_come_by_key_and_filter_by_state_and_target(api, targets):
    path = "/api/v1/circuit-breakers"
    assert keys(api.get(path)) == ["connector:crm", "http:api.example:443", "http:slow.example:80"]
    assert keys(api.get(f"{path}?ordering=-failures")) == [
        "connector:crm",
        "http:slow.example:80",
        "http:api.example:443",
    ]
    assert keys(api.get(f"{path}?state=half_open")) == ["http:slow.example:80"]
    assert keys(api.get(f"{path}?target=http:")) == ["http:api.example:443", "http:slow.example:80"]
    assert keys(api.get(f"{path}?target=CRM&state=open")) == ["connector:crm"]
    assert_bad(api.get(f"{path}?state=broken"), "state", "must be one of closed, open, half_open")


def test_health_comes_by_key_and_filters_by_status_and_target(api, targets):
    path = "/api/v1/health"
    assert keys(api.get(f"{path}?ordering=-key"))[0] == "http:slow.example:80"
    assert keys(api.get(f"{path}?status=unhealthy")) == ["connector:crm"]
    assert keys(api.get(f"{path}?target=example&status=healthy")) == ["http:api.example:443"]
    assert_bad(
        api.get(f"{path}?status=sick"), "status", "must be one of healthy, unhealthy, unknown"
    )
