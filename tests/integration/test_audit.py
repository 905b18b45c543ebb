"""The audit trail: actions by people, with their actor, across workflows and per workflow."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from flows.models import Workflow, WorkflowGrant

pytestmark = pytest.mark.django_db

DEPLOY = "name: deploy\nsteps:\n  say: {type: shell, run: echo hi}\n"
OTHER = "name: other\nsteps:\n  a: {type: noop}\n"


def publish(api: APIClient, text: str) -> None:
    name = text.split("\n")[0].split(": ")[1]
    response = api.put(f"/api/v1/workflows/{name}", text, content_type="application/yaml")
    assert response.status_code in (200, 201), response.content


@pytest.fixture
def history(api, bob):
    """alice publishes two workflows, starts and cancels a run; bob (via the CLI) pauses one."""
    publish(api, DEPLOY)
    publish(api, OTHER)
    run = api.post("/api/v1/workflows/deploy/runs", {"input": {}}, format="json").json()["id"]
    api.post(f"/api/v1/runs/{run}/cancel", {"reason": "wrong branch"}, format="json")
    other = Workflow.objects.get(name="other")
    WorkflowGrant.objects.create(workflow=other, user=bob, role="edit")
    call_command("pause_workflow", "other", "--as", "bob", stdout=StringIO())
    return run


def test_the_audit_lists_what_people_did_newest_first(api, history):
    body = api.get("/api/v1/audit").json()
    rows = [(e["type"], e["actor"], e["workflow"], e["step"]) for e in body["results"]]
    # What an action did at once is the person's too: cancelling the run cancelled its step.
    assert rows == [
        ("workflow.paused", "user:bob", "other", None),
        ("run.cancelled", "user:alice", "deploy", None),
        ("step.cancelled", "user:alice", "deploy", "say"),
        ("step.ready", "user:alice", "deploy", "say"),
        ("run.running", "user:alice", "deploy", None),
        ("run.queued", "user:alice", "deploy", None),
        ("workflow.published", "user:alice", "other", None),
        ("workflow.published", "user:alice", "deploy", None),
    ]
    assert body["count"] == 8


def test_what_the_engine_did_is_not_in_the_audit(api, history):
    actors = {e["actor"] for e in api.get("/api/v1/audit?limit=100").json()["results"]}
    assert actors == {"user:alice", "user:bob"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=user:bob", ["workflow.paused"]),
        ("type=run.*", ["run.cancelled", "run.running", "run.queued"]),
        ("type=workflow.published&workflow=deploy", ["workflow.published"]),
        (
            "ordering=id&type=workflow.*",
            ["workflow.published", "workflow.published", "workflow.paused"],
        ),
    ],
)
def test_the_audit_filters_and_orders(api, history, query, expected):
    types = [e["type"] for e in api.get(f"/api/v1/audit?{query}").json()["results"]]
    assert types == expected


def test_a_run_filter_keeps_that_runs_actions(api, history):
    types = [e["type"] for e in api.get(f"/api/v1/audit?run={history}").json()["results"]]
    assert types == ["run.cancelled", "step.cancelled", "step.ready", "run.running", "run.queued"]


def test_a_workflows_audit_covers_the_workflow_and_its_runs(api, history):
    body = api.get("/api/v1/workflows/deploy/audit").json()
    assert [e["type"] for e in body["results"]][::3] == ["run.cancelled", "run.running"]
    assert body["results"][-1]["type"] == "workflow.published"
    assert {e["workflow"] for e in body["results"]} == {"deploy"}
    assert body["results"][0]["data"]["reason"] == "wrong branch"
    assert api.get("/api/v1/workflows/nope/audit").status_code == 404


@pytest.mark.parametrize(
    "query", ["run=not-a-uuid", "since=yesterday", "ordering=actor", "ordering=-data"]
)
def test_bad_audit_filters_are_a_400_naming_the_parameter(api, history, query):
    response = api.get(f"/api/v1/audit?{query}")
    assert response.status_code == 400, (query, response.content)
    assert response.json()["message"]


def test_a_time_filter_with_any_iso_offset_is_compared_in_utc(api):
    # Found by tests/integration/test_fuzz_api.py: PostgreSQL refused the +20:06 offset (a 500).
    later = api.get("/api/v1/audit?since=9999-01-01T00:00:00%2B20:06")
    earlier = api.get("/api/v1/audit?until=2000-01-01T00:00:00-22:10")
    out_of_range = api.get("/api/v1/audit?until=0001-01-01T00:00:00%2B01:00")

    assert (later.status_code, later.json()["results"]) == (200, [])
    assert (earlier.status_code, earlier.json()["results"]) == (200, [])
    assert out_of_range.status_code == 400
    assert out_of_range.json()["errors"][0]["path"] == "until"


def test_the_audit_needs_credentials(history):
    assert APIClient().get("/api/v1/audit").status_code in (401, 403)


def test_the_audit_costs_the_same_queries_however_long_it_is(
    api, history, django_assert_max_num_queries
):
    for _ in range(5):
        api.post("/api/v1/workflows/deploy/runs", {"input": {}}, format="json")
    with django_assert_max_num_queries(4):
        api.get("/api/v1/audit?limit=50")
    assert Workflow.objects.count() == 2
