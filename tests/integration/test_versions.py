"""Versions: diff two, roll back to one (API, admin action, commands); history is never rewritten."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from flows import services as flow_services
from flows.models import Workflow, WorkflowVersion
from runs import services
from runs.models import Event

pytestmark = pytest.mark.django_db


def definition(message: str) -> dict[str, Any]:
    return {"name": "deploy", "steps": {"say": {"type": "shell", "run": f"echo {message}"}}}


@pytest.fixture
def deploy() -> Workflow:
    for message in ("one", "two", "three"):
        flow_services.publish(definition(message))
    return Workflow.objects.get(name="deploy")


def numbers(workflow: Workflow) -> list[int]:
    return sorted(workflow.versions.values_list("number", flat=True))


# Diff


def test_the_diff_of_two_versions_is_a_unified_diff_of_their_canonical_yaml(api, deploy):
    response = api.get("/api/v1/workflows/deploy/diff?from=1&to=3")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["workflow"], body["from"], body["to"]) == ("deploy", 1, 3)
    assert body["diff"].splitlines() == [
        "--- deploy v1",
        "+++ deploy v3",
        "@@ -1,5 +1,5 @@",
        " name: deploy",
        " steps:",
        "   say:",
        "-    run: echo one",
        "+    run: echo three",
        "     type: shell",
    ]


def test_the_diff_defaults_to_the_latest_version_against_the_one_before(api, deploy):
    body = api.get("/api/v1/workflows/deploy/diff").json()
    assert (body["from"], body["to"]) == (2, 3)
    assert "-    run: echo two" in body["diff"]


def test_a_version_against_itself_has_an_empty_diff(api, deploy):
    assert api.get("/api/v1/workflows/deploy/diff?from=2&to=2").json()["diff"] == ""


@pytest.mark.parametrize(
    ("query", "status", "path"),
    [
        ("from=1&to=9", 404, None),
        ("from=x&to=2", 400, "from"),
        ("from=1&to=0", 400, "to"),
        ("from=-1", 400, "from"),
    ],
)
def test_a_bad_diff_request_says_what_is_wrong(api, deploy, query, status, path):
    response = api.get(f"/api/v1/workflows/deploy/diff?{query}")
    assert response.status_code == status
    body = response.json()
    assert body["message"]
    if path:
        assert body["errors"][0]["path"] == path


def test_the_diff_of_an_unknown_workflow_is_404(api):
    assert api.get("/api/v1/workflows/nope/diff").status_code == 404


# Rollback


def test_rolling_back_publishes_the_old_content_as_a_new_version(api, deploy, alice):
    response = api.post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["version"], body["created"], body["content_of"]) == (4, True, 1)

    latest = Workflow.objects.get(name="deploy").latest_version
    first = WorkflowVersion.objects.get(workflow__name="deploy", number=1)
    assert latest.number == 4
    assert (latest.definition, latest.content_hash) == (first.definition, first.content_hash)
    assert latest.created_by == alice
    events = Event.objects.filter(workflow__name="deploy").order_by("id")
    assert list(events.values_list("type", flat=True))[-2:] == [
        "workflow.published",
        "workflow.rolled_back",
    ]
    rolled = events.last()
    assert rolled.actor == "user:alice"
    assert rolled.data == {"version": 4, "content_of": 1, "replaced": 3}


def test_rolling_back_to_the_content_already_latest_writes_nothing(api, deploy):
    api.post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json")
    again = api.post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json")
    assert again.status_code == 200
    assert (again.json()["version"], again.json()["created"]) == (4, False)
    assert Event.objects.filter(type="workflow.rolled_back").count() == 1


def test_a_running_run_keeps_the_version_it_started_on(api, deploy):
    run = services.start_run(deploy, {})
    api.post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json")
    run.refresh_from_db()
    assert run.version.number == 3
    assert services.start_run(Workflow.objects.get(name="deploy"), {}).version.number == 4


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({}, 400, "version"),
        ({"version": "one"}, 400, "version"),
        ({"version": 0}, 400, "version"),
        ({"version": True}, 400, "version"),
        ({"version": 1.5}, 400, "version"),
        ({"version": 1, "force": True}, 400, "force"),
        ([1], 400, "version"),
        ({"version": 7}, 404, None),
    ],
)
def test_a_bad_rollback_changes_nothing(api, deploy, body, status, path):
    response = api.post("/api/v1/workflows/deploy/rollback", body, format="json")
    assert response.status_code == status, response.content
    if path:
        assert response.json()["errors"][0]["path"] == path
    assert numbers(deploy) == [1, 2, 3]
    assert not Event.objects.filter(type="workflow.rolled_back").exists()


def test_rollback_needs_credentials(deploy):
    from rest_framework.test import APIClient

    response = APIClient().post("/api/v1/workflows/deploy/rollback", {"version": 1}, format="json")
    assert response.status_code in (401, 403)
    assert numbers(deploy) == [1, 2, 3]


# Admin and commands


def test_the_admin_rolls_back_from_a_version_page(client, alice, deploy):
    client.force_login(alice)
    version = WorkflowVersion.objects.get(workflow=deploy, number=2)
    response = client.post(
        "/admin/flows/workflowversion/",
        {"action": "roll_back", "_selected_action": [version.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "v4" in response.content.decode()
    latest = Workflow.objects.get(name="deploy").latest_version
    assert (latest.number, latest.content_hash) == (4, version.content_hash)


def test_the_admin_refuses_to_roll_back_several_versions_at_once(client, alice, deploy):
    client.force_login(alice)
    pks = list(deploy.versions.values_list("pk", flat=True)[:2])
    client.post("/admin/flows/workflowversion/", {"action": "roll_back", "_selected_action": pks})
    assert numbers(deploy) == [1, 2, 3]


def test_the_admin_version_page_shows_the_diff_against_the_previous_version(client, alice, deploy):
    client.force_login(alice)
    version = WorkflowVersion.objects.get(workflow=deploy, number=2)
    page = client.get(f"/admin/flows/workflowversion/{version.pk}/change/").content.decode()
    assert "-    run: echo one" in page
    assert "+    run: echo two" in page


def test_the_commands_diff_and_roll_back(deploy):
    out = StringIO()
    call_command("diff_versions", "deploy", "1", "2", stdout=out)
    assert "+    run: echo two" in out.getvalue()

    out = StringIO()
    call_command("rollback_workflow", "deploy", "1", stdout=out)
    assert "deploy v4" in out.getvalue()
    assert numbers(deploy) == [1, 2, 3, 4]


def test_the_commands_refuse_unknown_versions(deploy):
    with pytest.raises(CommandError, match="no version 9"):
        call_command("rollback_workflow", "deploy", "9")
    with pytest.raises(CommandError, match="no workflow"):
        call_command("diff_versions", "nope", "1", "2")
    assert numbers(deploy) == [1, 2, 3]
