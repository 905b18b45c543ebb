"""Approvals: approval steps and gates before steps, who may decide, forms, timeouts, the inbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from rest_framework.test import APIClient

from runs import services
from runs.models import Approval, Event, Run, StepRun
from runs.timers import tick
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def advance(run: Run) -> None:
    """Run whatever is ready now, without waiting for the run to end."""
    for _ in range(5):
        ready = list(StepRun.objects.filter(status="ready").values_list("pk", "attempt"))
        for pk, attempt in ready:
            run_attempt(pk, attempt)
        if not ready:
            return


def status_of(run: Run, name: str) -> str:
    return StepRun.objects.get(run=run, name=name).status


RELEASE = {
    "name": "release",
    "steps": {
        "build": {"type": "noop", "with": {"artifact": "a1"}},
        "gate": {
            "type": "approval",
            "needs": ["build"],
            "with": {
                "approvers": {"users": ["bob"]},
                "message": "Ship {{ parent.artifact }}?",
                "form": {
                    "type": "object",
                    "properties": {"ticket": {"type": "string", "pattern": "^OPS-[0-9]+$"}},
                    "required": ["ticket"],
                },
            },
        },
        "deploy": {
            "type": "noop",
            "needs": ["gate"],
            "with": {"ticket": "{{ parent.data.ticket }}"},
        },
    },
}


def test_an_approval_step_waits_and_the_approvers_answers_become_its_output(publish, bob):
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    assert status_of(run, "gate") == "waiting"
    approval = Approval.objects.get(run=run)
    assert approval.message == "Ship a1?"

    response = client_for(bob).post(
        f"/api/v1/runs/{run.pk}/approvals/gate",
        {"decision": "approve", "comment": "go", "data": {"ticket": "OPS-12"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["decided_by"] == "bob"

    run = drive(run)
    assert run.status == "succeeded"
    gate = StepRun.objects.get(run=run, name="gate")
    assert gate.output == {
        "decision": "approve",
        "by": "bob",
        "comment": "go",
        "data": {"ticket": "OPS-12"},
    }
    assert StepRun.objects.get(run=run, name="deploy").output == {"ticket": "OPS-12"}
    decided = Event.objects.get(run=run, type="approval.decided")
    assert decided.actor == "user:bob"
    assert decided.data["comment"] == "go"


def test_a_rejection_fails_the_step_with_who_and_why(publish, bob):
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    response = client_for(bob).post(
        f"/api/v1/runs/{run.pk}/approvals/gate",
        {"decision": "reject", "comment": "not today"},
        format="json",
    )
    assert response.status_code == 200
    run = drive(run)
    assert run.status == "failed"
    assert StepRun.objects.get(run=run, name="gate").error == "rejected by bob: not today"
    assert status_of(run, "deploy") == "skipped"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"decision": "approve", "data": {"ticket": "nope"}}, "data.ticket"),
        ({"decision": "approve"}, "data"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": "approve", "data": {"ticket": "OPS-1"}, "extra": 1}, "extra"),
    ],
)
def test_a_bad_decision_is_a_400_and_the_approval_stays_pending(publish, bob, body, path):
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    response = client_for(bob).post(f"/api/v1/runs/{run.pk}/approvals/gate", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["path"] == path
    assert Approval.objects.get(run=run).status == "pending"


def test_only_approvers_may_decide_and_a_second_decision_is_a_409(
    publish, bob, alice, django_user_model
):
    carol = django_user_model.objects.create_user("carol")
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    url = f"/api/v1/runs/{run.pk}/approvals/gate"

    assert client_for(carol).post(url, {"decision": "reject"}, format="json").status_code == 403
    assert Approval.objects.get(run=run).status == "pending"
    assert client_for(bob).post(url, {"decision": "reject"}, format="json").status_code == 200
    second = client_for(alice).post(
        url, {"decision": "approve", "data": {"ticket": "OPS-1"}}, format="json"
    )
    assert second.status_code == 409
    assert APIClient().post(url, {"decision": "reject"}, format="json").status_code in (401, 403)


def test_approvers_by_group_and_by_permission(publish, django_user_model):
    ops = Group.objects.create(name="ops")
    dave = django_user_model.objects.create_user("dave")
    dave.groups.add(ops)
    erin = django_user_model.objects.create_user("erin")
    erin.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    frank = django_user_model.objects.create_user("frank")
    approvers = {"groups": ["ops"], "permissions": ["runs.decide_approval"]}
    assert services.can_decide(dave, approvers)
    assert services.can_decide(erin, approvers)
    assert not services.can_decide(frank, approvers)
    assert services.can_decide(erin, {})  # nobody named: holders of the permission
    assert not services.can_decide(frank, {})


@pytest.mark.parametrize(("default", "status"), [("approve", "succeeded"), ("reject", "failed")])
def test_nobody_deciding_in_time_applies_the_default(publish, default, status):
    workflow = publish(
        {
            "name": f"timeout-{default}",
            "steps": {"gate": {"type": "approval", "timeout": "1h", "with": {"default": default}}},
        }
    )
    run = services.start_run(workflow, {})
    advance(run)
    tick(timezone.now() + timedelta(minutes=30))
    assert status_of(run, "gate") == "waiting"

    tick(timezone.now() + timedelta(hours=1, seconds=1))
    run.refresh_from_db()
    assert status_of(run, "gate") == status
    approval = Approval.objects.get(run=run)
    assert (approval.status, approval.decision) == ("expired", default)
    assert Event.objects.filter(run=run, type="approval.expired").count() == 1


def test_an_approval_without_a_timeout_does_not_expire_with_the_default_step_timeout(publish):
    run = services.start_run(
        publish({"name": "forever", "steps": {"gate": {"type": "approval"}}}), {}
    )
    advance(run)
    assert Approval.objects.get(run=run).expires_at is None
    tick(timezone.now() + timedelta(days=30))
    assert status_of(run, "gate") == "waiting"


GATED = {
    "name": "gated",
    "steps": {
        "deploy": {
            "type": "shell",
            "run": "echo deploying",
            "requires_approval": {"approvers": {"users": ["bob"]}, "message": "Deploy?"},
            "retry": {"max_attempts": 2},
        },
    },
}


def test_requires_approval_gates_the_step_and_approval_runs_it(publish, bob):
    run = services.start_run(publish(GATED), {})
    advance(run)
    deploy = StepRun.objects.get(run=run, name="deploy")
    assert deploy.status == "waiting"
    assert not deploy.log_lines.exists()  # nothing ran before the decision

    client_for(bob).post(
        f"/api/v1/runs/{run.pk}/approvals/deploy", {"decision": "approve"}, format="json"
    )
    run = drive(run)
    assert run.status == "succeeded"
    deploy.refresh_from_db()
    assert deploy.output == {}
    assert [line.text for line in deploy.log_lines.all()] == ["deploying"]
    assert Approval.objects.get(run=run).kind == "gate"


def test_a_rejected_gate_fails_the_step_without_running_it(publish, bob):
    run = services.start_run(publish(GATED), {})
    advance(run)
    client_for(bob).post(
        f"/api/v1/runs/{run.pk}/approvals/deploy", {"decision": "reject"}, format="json"
    )
    run = drive(run)
    assert run.status == "failed"
    assert not StepRun.objects.get(run=run, name="deploy").log_lines.exists()


def test_the_pending_inbox_lists_what_a_user_may_decide(publish, bob, api, django_user_model):
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    inbox = client_for(bob).get("/api/v1/approvals", {"status": "pending", "mine": "1"}).json()
    assert [(a["workflow"], a["step"], a["kind"]) for a in inbox["results"]] == [
        ("release", "gate", "approval")
    ]
    carol = django_user_model.objects.create_user("carol")
    assert (
        client_for(carol)
        .get("/api/v1/approvals", {"status": "pending", "mine": "1"})
        .json()["results"]
        == []
    )
    assert api.get("/api/v1/approvals", {"status": "bogus"}).status_code == 400


def test_cancelling_a_run_drops_its_pending_approvals(publish, bob):
    run = services.start_run(publish(RELEASE), {})
    advance(run)
    services.cancel_run(run, actor="user:alice")
    assert Approval.objects.get(run=run).status == "dropped"
    response = client_for(bob).post(
        f"/api/v1/runs/{run.pk}/approvals/gate", {"decision": "approve"}, format="json"
    )
    assert response.status_code == 409
