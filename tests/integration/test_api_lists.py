"""The run, approval and dead-letter lists' query parameters (runs/filters.py): ordering, a 400
naming the parameter for a value it cannot take, and `?mine=1` through approve grants."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from flows.models import Workflow, WorkflowGrant
from runs import services
from runs.models import Approval, DeadLetter, Run, StepRun
from steps.worker import run_attempt

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def waiting(workflow: Workflow) -> Run:
    """A run of `workflow` whose approval step waits."""
    run = services.start_run(workflow, {})
    for pk, attempt in StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt"):
        run_attempt(pk, attempt)
    assert Approval.objects.filter(run=run, status="pending").exists()
    return run


def asking(name: str, **approvers: list[str]) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "approval"}
    if approvers:
        step["with"] = {"approvers": approvers}
    return {"name": name, "steps": {"ask": step}}


def rows(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


def assert_bad(response: Any, parameter: str, message: str | None = None) -> None:
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert [e["path"] for e in errors] == [parameter]
    if message is not None:
        assert errors[0]["message"] == message


# Runs


def test_runs_come_newest_first_unless_ordering_says_otherwise(api, publish):
    workflow = publish({"name": "w", "steps": {"a": {"type": "noop"}}})
    first, second = services.start_run(workflow, {}), services.start_run(workflow, {})

    assert [r["id"] for r in rows(api.get("/api/v1/runs"))] == [str(second.pk), str(first.pk)]
    oldest_first = rows(api.get("/api/v1/runs?ordering=created_at"))
    assert [r["id"] for r in oldest_first] == [str(first.pk), str(second.pk)]
    under_workflow = rows(api.get("/api/v1/workflows/w/runs?ordering=created_at"))
    assert [r["id"] for r in under_workflow] == [str(first.pk), str(second.pk)]


@pytest.mark.parametrize("path", ["/api/v1/runs", "/api/v1/workflows/w/runs"])
def test_a_run_list_takes_a_status_and_refuses_an_unknown_one(api, publish, path):
    workflow = publish({"name": "w", "steps": {"a": {"type": "noop"}}})
    run = services.start_run(workflow, {})
    Run.objects.filter(pk=run.pk).update(status="failed")
    services.start_run(workflow, {})

    assert [r["id"] for r in rows(api.get(f"{path}?status=failed"))] == [str(run.pk)]
    assert_bad(
        api.get(f"{path}?status=exploded"),
        "status",
        "must be one of queued, running, paused, succeeded, failed, cancelled",
    )


@pytest.mark.parametrize("path", ["runs", "approvals", "dead-letters"])
def test_ordering_by_a_field_a_list_does_not_offer_is_a_400(api, path):
    assert_bad(api.get(f"/api/v1/{path}?ordering=error"), "ordering")


# Approvals and dead letters


def test_the_approval_and_dead_letter_lists_refuse_what_their_filters_cannot_take(api):
    assert_bad(api.get("/api/v1/approvals?run=not-a-uuid"), "run", "must be a run id")
    assert_bad(api.get("/api/v1/approvals?mine=yes"), "mine", "must be one of 1, true, 0, false")
    assert_bad(
        api.get("/api/v1/dead-letters?status=lost"),
        "status",
        "must be one of open, requeued, discarded",
    )
    assert_bad(api.get("/api/v1/dead-letters?run=42"), "run", "must be a run id")


def test_dead_letters_can_be_filtered_by_run_and_workflow(api, publish):
    workflow = publish({"name": "w", "steps": {"a": {"type": "noop"}}})
    runs = [services.start_run(workflow, {}) for _ in range(2)]
    letters = [
        DeadLetter.objects.create(run=r, step_run=r.steps.get(), attempts=1, error="x")
        for r in runs
    ]

    assert [d["id"] for d in rows(api.get(f"/api/v1/dead-letters?run={runs[0].pk}"))] == [
        letters[0].pk
    ]
    assert len(rows(api.get("/api/v1/dead-letters?workflow=w&status=open"))) == 2
    assert rows(api.get("/api/v1/dead-letters?workflow=other")) == []


# ?mine=1


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie")


def test_mine_includes_approvals_an_approve_grant_lets_the_user_decide(
    publish, bob, charlie, django_user_model
):
    alpha, beta = publish(asking("alpha")), publish(asking("beta"))
    named = publish(asking("named", users=["bob"]))
    by_group = publish(asking("by-group", groups=["ops"]))
    others = publish(asking("others", users=["dave"]))
    WorkflowGrant.objects.create(workflow=alpha, user=bob, role="approve")
    WorkflowGrant.objects.create(workflow=others, user=bob, role="approve")  # names someone else
    ops = Group.objects.create(name="ops")
    charlie.groups.add(ops)
    WorkflowGrant.objects.create(workflow=beta, group=ops, role="approve")
    for workflow in (alpha, beta, named, by_group, others):
        waiting(workflow)

    def mine(user: Any) -> set[str]:
        found = rows(client_for(user).get("/api/v1/approvals?status=pending&mine=1"))
        return {a["workflow"] for a in found}

    assert mine(bob) == {"alpha", "named"}
    assert mine(charlie) == {"beta", "by-group"}
    assert mine(django_user_model.objects.create_user("erin")) == set()
    staff = django_user_model.objects.create_user("sam", is_staff=True)
    for workflow in (alpha, others):
        WorkflowGrant.objects.create(workflow=workflow, user=staff, role="view")
    assert mine(staff) == {"alpha"}  # those naming nobody, of the workflows staff may view
    # Each of them may decide what the inbox lists, and nothing else.
    for user in (bob, charlie):
        for approval in Approval.objects.select_related("run"):
            listed = approval.run.workflow.name in mine(user)
            assert listed == services.can_decide(user, approval.approvers, approval.run.workflow_id)


def test_mine_false_or_0_lists_everything_visible(api, publish):
    waiting(publish(asking("alpha", users=["nobody"])))

    assert len(rows(api.get("/api/v1/approvals?mine=0"))) == 1
    assert len(rows(api.get("/api/v1/approvals?mine=false"))) == 1


def test_mine_costs_the_same_queries_for_many_approvals_as_for_one(publish, bob):
    alpha = publish(asking("alpha"))
    WorkflowGrant.objects.create(workflow=alpha, user=bob, role="approve")
    waiting(alpha)

    def inbox_queries() -> int:
        client = client_for(type(bob).objects.get(pk=bob.pk))  # no answers cached on it
        with CaptureQueriesContext(connection) as counted:
            assert rows(client.get("/api/v1/approvals?mine=1"))
        return len(counted.captured_queries)

    one = inbox_queries()
    for _ in range(5):
        waiting(alpha)
    assert inbox_queries() == one
