"""Who may do what with which workflow (flows/access.py), the same in the API, the streams, the
admin and the commands. bob is a team member; charlie holds nothing."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from flows import access
from flows.models import Workflow, WorkflowGrant
from runs import services
from runs.models import Event, Run

pytestmark = pytest.mark.django_db

DEPLOY = {"name": "deploy", "steps": {"ship": {"type": "noop"}}}
SECRET = {"name": "payroll", "steps": {"pay": {"type": "noop"}}}


@pytest.fixture
def flows(publish) -> dict[str, Workflow]:
    return {"deploy": publish(DEPLOY), "payroll": publish(SECRET)}


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie", "c@example.com", "charlie-pw")


def client_for(user: Any) -> APIClient:
    access.forget(user)
    client = APIClient()
    client.force_authenticate(user)
    return client


def grant(workflow: Workflow, role: str, **who: Any) -> None:
    WorkflowGrant.objects.create(workflow=workflow, role=role, **who)
    for user in (who.get("user"),):
        if user is not None:
            access.forget(user)


def names(response) -> list[str]:
    return [row["name"] for row in response.json()["results"]]


# Seeing


def test_a_user_sees_only_the_workflows_granted_to_them(flows, bob, charlie):
    grant(flows["deploy"], "view", user=bob)
    assert names(client_for(bob).get("/api/v1/workflows")) == ["deploy"]
    assert names(client_for(charlie).get("/api/v1/workflows")) == []


def test_a_workflow_one_may_not_view_does_not_exist_for_them(flows, bob):
    grant(flows["deploy"], "view", user=bob)
    client = client_for(bob)
    assert client.get("/api/v1/workflows/payroll").status_code == 404
    assert client.get("/api/v1/workflows/payroll/versions").status_code == 404
    assert client.get("/api/v1/workflows/nope").status_code == 404  # the same answer
    assert client.get("/api/v1/workflows/deploy").status_code == 200


def test_runs_events_approvals_and_audit_are_narrowed_to_visible_workflows(flows, bob):
    grant(flows["deploy"], "view", user=bob)
    mine = services.start_run(flows["deploy"], {})
    hidden = services.start_run(flows["payroll"], {})
    client = client_for(bob)

    assert [r["id"] for r in client.get("/api/v1/runs").json()["results"]] == [str(mine.pk)]
    assert client.get(f"/api/v1/runs/{hidden.pk}").status_code == 404
    assert client.get(f"/api/v1/runs/{hidden.pk}/events").status_code == 404
    assert client.get(f"/api/v1/runs/{hidden.pk}/logs").status_code == 404
    assert client.get(f"/api/v1/runs/{mine.pk}/events").status_code == 200
    audit_workflows = {e["workflow"] for e in client.get("/api/v1/audit").json()["results"]}
    assert audit_workflows <= {"deploy"}


def test_a_group_grant_reaches_its_members(flows, bob):
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    grant(flows["payroll"], "run", group=team)
    client = client_for(bob)
    assert names(client.get("/api/v1/workflows")) == ["payroll"]
    assert (
        client.post("/api/v1/workflows/payroll/runs", {"input": {}}, format="json").status_code
        == 201
    )


def test_a_global_permission_reaches_every_workflow(flows, bob):
    bob.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    bob = type(bob).objects.get(pk=bob.pk)  # permissions are cached on the user object
    client = client_for(bob)
    assert names(client.get("/api/v1/workflows")) == ["deploy", "payroll"]
    assert (
        client.post("/api/v1/workflows/deploy/runs", {"input": {}}, format="json").status_code
        == 403
    )


# Acting


@pytest.mark.parametrize(
    ("role", "start", "cancel", "put", "pause_workflow"),
    [
        ("view", 403, 403, 403, 403),
        ("approve", 403, 403, 403, 403),
        ("run", 201, 200, 403, 403),
        ("edit", 201, 200, 201, 200),
    ],
)
def test_each_role_allows_what_it_says(flows, bob, role, start, cancel, put, pause_workflow):
    grant(flows["deploy"], role, user=bob)
    client = client_for(bob)
    started = client.post("/api/v1/workflows/deploy/runs", {"input": {}}, format="json")
    assert started.status_code == start
    run = services.start_run(flows["deploy"], {})
    assert client.post(f"/api/v1/runs/{run.pk}/cancel", {}, format="json").status_code == cancel
    changed = {**DEPLOY, "description": "changed"}
    assert client.put("/api/v1/workflows/deploy", changed, format="json").status_code == put
    assert client.post("/api/v1/workflows/deploy/pause").status_code == pause_workflow


def test_a_refused_action_changes_nothing(flows, bob):
    grant(flows["deploy"], "view", user=bob)
    run = services.start_run(flows["deploy"], {})
    before = Event.objects.count()
    client = client_for(bob)
    assert client.post(f"/api/v1/runs/{run.pk}/cancel", {}, format="json").status_code == 403
    assert (
        client.post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json").status_code
        == 403
    )
    assert Run.objects.get(pk=run.pk).status == run.status
    assert Event.objects.count() == before


def test_creating_a_workflow_needs_the_global_right_to_add(bob):
    client = client_for(bob)
    assert (
        client.post("/api/v1/workflows", {"definition": DEPLOY}, format="json").status_code == 403
    )
    bob.user_permissions.add(Permission.objects.get(codename="add_workflow"))
    bob = type(bob).objects.get(pk=bob.pk)
    assert (
        client_for(bob).post("/api/v1/workflows", {"definition": DEPLOY}, format="json").status_code
        == 201
    )


def test_put_to_an_unknown_name_creates_only_with_the_right_to_add(bob):
    new = {"name": "fresh", "steps": {"one": {"type": "noop"}}}
    refused = client_for(bob).put("/api/v1/workflows/fresh", new, format="json")
    assert refused.status_code == 403
    assert not Workflow.objects.filter(name="fresh").exists()
    bob.user_permissions.add(Permission.objects.get(codename="add_workflow"))
    bob = type(bob).objects.get(pk=bob.pk)
    assert client_for(bob).put("/api/v1/workflows/fresh", new, format="json").status_code == 201


def test_an_approve_grant_decides_approvals_that_name_no_approvers(publish, bob):
    gated = publish(
        {
            "name": "gated",
            "steps": {"gate": {"type": "approval"}, "after": {"type": "noop", "needs": ["gate"]}},
        }
    )
    run = services.start_run(gated, {})
    from runs.models import Approval
    from steps.worker import run_attempt

    step = run.steps.get(name="gate")
    run_attempt(step.pk, 1)
    assert Approval.objects.filter(run=run, status="pending").exists()

    url = f"/api/v1/runs/{run.pk}/approvals/gate"
    grant(gated, "view", user=bob)
    assert client_for(bob).post(url, {"decision": "approve"}, format="json").status_code == 403
    grant(gated, "approve", user=bob)
    assert client_for(bob).post(url, {"decision": "approve"}, format="json").status_code == 200


# Grants


def test_grants_are_managed_by_editors_and_audited(flows, alice, bob, charlie):
    grant(flows["deploy"], "edit", user=bob)
    client = client_for(bob)
    added = client.post(
        "/api/v1/workflows/deploy/grants", {"user": "charlie", "role": "run"}, format="json"
    )
    assert added.status_code == 201, added.content
    assert [
        (g["user"], g["role"])
        for g in client.get("/api/v1/workflows/deploy/grants").json()["results"]
    ] == [
        ("bob", "edit"),
        ("charlie", "run"),
    ]
    assert access.allowed(charlie, "run", flows["deploy"].pk)
    removed = client.delete(f"/api/v1/workflows/deploy/grants/{added.json()['id']}")
    assert removed.status_code == 204
    access.forget(charlie)
    assert not access.allowed(charlie, "run", flows["deploy"].pk)
    types = list(Event.objects.filter(type__startswith="grant.").values_list("type", "actor"))
    assert types == [("grant.added", "user:bob"), ("grant.removed", "user:bob")]

    runner = client_for(charlie)
    grant(flows["deploy"], "run", user=charlie)
    refused = runner.post(
        "/api/v1/workflows/deploy/grants", {"user": "charlie", "role": "edit"}, format="json"
    )
    assert refused.status_code == 403  # a runner may not make themselves an editor


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"role": "run"}, "user"),
        ({"user": "bob", "group": "team", "role": "run"}, "user"),
        ({"user": "nobody", "role": "run"}, "user"),
        ({"user": "bob", "role": "owner"}, "role"),
        ({"user": "alice", "role": "run", "until": "soon"}, "until"),
    ],
)
def test_a_bad_grant_says_what_is_wrong_and_grants_nothing(api, flows, body, path):
    Group.objects.create(name="team")
    response = api.post("/api/v1/workflows/deploy/grants", body, format="json")
    assert response.status_code == 400, response.content
    assert path in [e["path"] for e in response.json()["errors"]]
    assert not WorkflowGrant.objects.exists()


# Streams, commands, admin


def test_a_stream_of_a_run_one_may_not_view_is_404(flows, bob, client):
    hidden = services.start_run(flows["payroll"], {})
    client.force_login(bob)
    assert client.get(f"/api/v1/runs/{hidden.pk}/events/stream").status_code == 404
    assert client.get(f"/api/v1/runs/{hidden.pk}/logs/stream").status_code == 404


def test_commands_acting_as_a_user_follow_their_grants(flows, bob):
    run = services.start_run(flows["deploy"], {})
    with pytest.raises(CommandError, match="may not run"):
        call_command("cancel_run", str(run.pk), "--as", "bob")
    with pytest.raises(CommandError, match="may not edit"):
        call_command("pause_workflow", "deploy", "--as", "bob")
    grant(flows["deploy"], "run", user=bob)
    call_command("cancel_run", str(run.pk), "--as", "bob", stdout=StringIO())
    assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_staff_see_in_the_admin_only_what_they_may_view(flows, client, django_user_model):
    staff = django_user_model.objects.create_user("sam", "s@example.com", "pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_run"]))
    grant(flows["deploy"], "view", user=staff)
    services.start_run(flows["deploy"], {})
    services.start_run(flows["payroll"], {})
    client.force_login(staff)
    page = client.get("/admin/runs/run/").content.decode()
    assert "deploy" in page
    assert "payroll" not in page


def test_grants_changed_in_the_admin_are_audited(flows, client, alice, bob):
    client.force_login(alice)
    workflow = flows["deploy"]
    url = f"/admin/flows/workflow/{workflow.pk}/change/"
    form = {
        "description": "",
        "grants-TOTAL_FORMS": "1",
        "grants-INITIAL_FORMS": "0",
        "grants-0-user": bob.pk,
        "grants-0-role": "run",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    assert client.post(url, form).status_code == 302
    assert WorkflowGrant.objects.filter(workflow=workflow, user=bob, role="run").exists()
    event = Event.objects.get(type="grant.added")
    assert (event.actor, event.data) == (
        "user:alice",
        {"role": "run", "user": "bob", "group": None},
    )


def test_admin_actions_change_only_runs_of_workflows_one_may_run(flows, client, django_user_model):
    staff = django_user_model.objects.create_user("sam", "s@example.com", "pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_run", "change_run"]))
    grant(flows["deploy"], "run", user=staff)
    grant(flows["payroll"], "view", user=staff)
    runnable = services.start_run(flows["deploy"], {})
    viewed = services.start_run(flows["payroll"], {})
    client.force_login(staff)

    response = client.post(
        "/admin/runs/run/",
        {"action": "cancel", "_selected_action": [runnable.pk, viewed.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 selected item(s) left alone" in page
    assert Run.objects.get(pk=runnable.pk).status == "cancelled"
    assert Run.objects.get(pk=viewed.pk).status == viewed.status
