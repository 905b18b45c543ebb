"""The run API: starting runs, listing and showing them, their logs and their events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from runs import services
from runs.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db

RELEASE = """
name: release
input:
  type: object
  required: [version]
  properties:
    version: {type: string}
    env: {type: string, enum: [staging, production], default: staging}
    replicas: {type: integer, minimum: 1, default: 2}
steps:
  build:
    type: shell
    run: 'echo building {{ input.version }}; echo careful >&2; echo "OUTPUT: {\\"artifact\\": \\"app.tar\\"}"'
  deploy:
    type: shell
    needs: [build]
    env: {ARTIFACT: "{{ steps.build.output.artifact }}"}
    run: 'echo deploying $ARTIFACT to {{ input.env }}'
"""

RUN_FIELDS = {
    "id",
    "workflow",
    "version",
    "status",
    "input",
    "output",
    "error",
    "source",
    "parent_run",
    "depth",
    "priority",
    "idempotency_key",
    "rerun_of",
    "deadline_at",
    "steps",
    "created_at",
    "started_at",
    "finished_at",
}
STEP_FIELDS = {
    "name",
    "type",
    "status",
    "attempt",
    "output",
    "error",
    "waiting_for",
    "due_at",
    "chosen",
    "item_index",
    "item",
    "started_at",
    "finished_at",
}


@pytest.fixture
def release(publish):
    return publish(RELEASE)


@pytest.fixture
def finished_run(release, run_to_end) -> Run:
    run = run_to_end(services.start_run(release, {"version": "1.2.3"}))
    assert run.status == "succeeded", run.error
    return run


def start(api: APIClient, body: Any, name: str = "release") -> Any:
    return api.post(f"/api/v1/workflows/{name}/runs", body, format="json")


# Starting runs


def test_starting_a_run_returns_it_with_its_steps_and_the_input_defaults(api, alice, release):
    response = start(api, {"input": {"version": "1.2.3"}})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == RUN_FIELDS
    assert body["status"] == "running"
    assert body["workflow"] == "release"
    assert body["version"] == 1
    assert body["input"] == {"version": "1.2.3", "env": "staging", "replicas": 2}
    assert [(s["name"], s["status"], s["attempt"]) for s in body["steps"]] == [
        ("build", "ready", 1),
        ("deploy", "pending", 0),
    ]
    run = Run.objects.get()
    assert str(run.pk) == body["id"]
    assert run.input == body["input"]
    assert run.created_by == alice
    assert run.source == "api"
    assert run.version == release.latest_version
    assert StepRun.objects.filter(run=run).count() == 2
    assert list(Event.objects.filter(run=run).values_list("type", flat=True)) == [
        "run.queued",
        "run.running",
        "step.ready",
    ]


def test_a_run_without_a_body_gets_an_empty_input(api, publish):
    publish({"name": "plain", "steps": {"only": {"type": "noop"}}})

    response = api.post("/api/v1/workflows/plain/runs")

    assert response.status_code == 201
    assert response.json()["input"] == {}
    assert Run.objects.count() == 1


def test_input_that_breaks_the_schema_lists_every_path_and_creates_no_run(api, release):
    response = start(api, {"input": {"env": "prod", "replicas": 0}})

    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("invalid run input")
    errors = {error["path"]: error["message"] for error in body["errors"]}
    assert set(errors) == {"input", "input.env", "input.replicas"}
    assert "'version' is a required property" in errors["input"]
    assert "minimum" in errors["input.replicas"]
    assert Run.objects.count() == 0
    assert StepRun.objects.count() == 0
    assert not Event.objects.filter(run__isnull=False).exists()


def test_a_run_of_an_unknown_workflow_is_404(api, release):
    response = start(api, {"input": {}}, name="nope")

    assert response.status_code == 404
    assert "message" in response.json()
    assert Run.objects.count() == 0


BAD_START_BODIES = {
    "a list": ([1, 2], "", "must be an object"),
    "a string": ("hello", "", "must be an object"),
    "an unknown field": ({"input": {"version": "1"}, "extra": 1}, "extra", "unknown field"),
    "input not an object": ({"input": 5}, "input", "must be an object"),
    "input a list": ({"input": ["1"]}, "input", "must be an object"),
}


@pytest.mark.parametrize(
    ("body", "path", "message"), BAD_START_BODIES.values(), ids=BAD_START_BODIES.keys()
)
def test_a_start_body_that_is_not_an_input_object_is_refused(api, release, body, path, message):
    response = start(api, body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["message"]
    assert [error["path"] for error in payload["errors"]] == [path]
    assert message in payload["errors"][0]["message"]
    assert Run.objects.count() == 0


def test_a_start_body_that_is_not_json_is_refused(api, release):
    response = api.post(
        "/api/v1/workflows/release/runs", data="{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]
    assert Run.objects.count() == 0


# Listing and showing


def test_runs_can_be_filtered_by_workflow_and_status(api, publish, finished_run):
    running = services.start_run(finished_run.workflow, {"version": "2"})
    other = services.start_run(publish({"name": "other", "steps": {"a": {"type": "noop"}}}), {})

    def ids(query: str) -> set[str]:
        response = api.get(f"/api/v1/runs{query}")
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert ids("") == {str(finished_run.pk), str(running.pk), str(other.pk)}
    assert ids("?workflow=release") == {str(finished_run.pk), str(running.pk)}
    assert ids("?status=succeeded") == {str(finished_run.pk)}
    assert ids("?workflow=other&status=running") == {str(other.pk)}
    assert ids("?workflow=nope") == set()


def test_a_workflows_runs_are_listed_under_it(api, release):
    run = services.start_run(release, {"version": "1"})

    response = api.get("/api/v1/workflows/release/runs")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(run.pk)]


def test_a_limit_or_offset_beyond_64_bits_is_clamped_instead_of_a_server_error(api, release):
    # Found by tests/integration/test_fuzz_api.py: the database refused such a LIMIT (a 500).
    run = services.start_run(release, {"version": "1"})
    huge = str(2**80)

    everything = api.get(f"/api/v1/runs?limit={huge}")
    nothing = api.get(f"/api/v1/runs?limit={huge}&offset={huge}")

    assert everything.status_code == 200
    assert [row["id"] for row in everything.json()["results"]] == [str(run.pk)]
    assert nothing.status_code == 200
    assert nothing.json()["results"] == []
    assert nothing.json()["count"] == 1


@pytest.mark.parametrize("path", ["runs", "approvals", "dead-letters"])
def test_a_nul_in_a_workflow_filter_is_a_400_naming_it(api, release, path):
    # Found by tests/integration/test_fuzz_api.py: PostgreSQL refused to compare it (a 500).
    response = api.get(f"/api/v1/{path}?workflow=release%00")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"path": "workflow", "message": "Null characters are not allowed."}
    ]


def test_an_unknown_status_filter_is_400(api, release):
    response = api.get("/api/v1/runs?status=exploded")

    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "status"


def test_run_detail_has_exactly_the_documented_shape(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == RUN_FIELDS
    assert body["id"] == str(finished_run.pk)
    assert body["workflow"] == "release"
    assert body["version"] == 1
    assert body["status"] == "succeeded"
    assert body["source"] == "api"
    assert body["error"] == ""
    assert body["output"] == {"deploy": {}}
    assert body["finished_at"] is not None
    for step in body["steps"]:
        assert set(step) == STEP_FIELDS
    build, deploy = body["steps"]
    assert build["name"] == "build"
    assert build["type"] == "shell"
    assert build["status"] == "succeeded"
    assert build["attempt"] == 1
    assert build["output"] == {"artifact": "app.tar"}
    assert build["started_at"] is not None
    assert build["finished_at"] is not None
    assert deploy["name"] == "deploy"


def test_run_detail_costs_the_same_queries_however_many_steps(api, publish):
    def queries_for(steps: int) -> int:
        name = f"wide-{steps}"
        definition = {"name": name, "steps": {f"s{i}": {"type": "noop"} for i in range(steps)}}
        run = services.start_run(publish(definition), {})
        with CaptureQueriesContext(connection) as ctx:
            assert api.get(f"/api/v1/runs/{run.pk}").status_code == 200
        return len(ctx.captured_queries)

    assert queries_for(2) == queries_for(20) <= 2


def test_an_unknown_run_is_404(api):
    response = api.get(f"/api/v1/runs/{uuid.uuid4()}")

    assert response.status_code == 404
    assert "message" in response.json()


# Logs


def test_logs_are_json_lines_with_step_and_stream(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/logs")

    assert response.status_code == 200
    body = response.json()
    assert body["run"] == str(finished_run.pk)
    lines = {(line["step"], line["stream"], line["text"]) for line in body["lines"]}
    assert lines == {
        ("build", "stdout", "building 1.2.3"),
        ("build", "stderr", "careful"),
        ("build", "stdout", 'OUTPUT: {"artifact": "app.tar"}'),
        ("deploy", "stdout", "deploying app.tar to staging"),
    }
    assert {line["attempt"] for line in body["lines"]} == {1}
    assert body["next_after"] == body["lines"][-1]["id"]


def test_logs_can_be_filtered_by_step(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/logs?step=deploy")

    assert response.status_code == 200
    assert [(line["step"], line["text"]) for line in response.json()["lines"]] == [
        ("deploy", "deploying app.tar to staging")
    ]


def test_logs_continue_from_a_cursor(api, finished_run):
    first = api.get(f"/api/v1/runs/{finished_run.pk}/logs?limit=2").json()
    rest = api.get(f"/api/v1/runs/{finished_run.pk}/logs?after={first['next_after']}").json()
    everything = api.get(f"/api/v1/runs/{finished_run.pk}/logs").json()

    assert len(first["lines"]) == 2
    assert first["lines"] + rest["lines"] == everything["lines"]
    assert rest["next_after"] == everything["next_after"]
    past_the_end = api.get(f"/api/v1/runs/{finished_run.pk}/logs?after={rest['next_after']}")
    assert past_the_end.json()["lines"] == []
    assert past_the_end.json()["next_after"] == rest["next_after"]


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("step=nope", "step"),
    ],
)
def test_bad_log_queries_are_400(api, finished_run, query, path):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/logs?{query}")

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == [path]


def test_logs_as_plain_text(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/logs", HTTP_ACCEPT="text/plain")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "[build] building 1.2.3\n" in text
    assert "[deploy] deploying app.tar to staging\n" in text
    assert len(text.splitlines()) == 4


def test_logs_of_an_unknown_run_are_404(api):
    response = api.get(f"/api/v1/runs/{uuid.uuid4()}/logs")

    assert response.status_code == 404


# Events


def test_events_list_every_transition_in_order(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/events")

    assert response.status_code == 200
    events = response.json()
    assert [(event["type"], event["step"]) for event in events] == [
        ("run.queued", None),
        ("run.running", None),
        ("step.ready", "build"),
        ("step.running", "build"),
        ("step.succeeded", "build"),
        ("step.ready", "deploy"),
        ("step.running", "deploy"),
        ("step.succeeded", "deploy"),
        ("run.succeeded", None),
    ]
    assert {event["run"] for event in events} == {str(finished_run.pk)}
    ids = [event["id"] for event in events]
    assert ids == sorted(ids)
    assert events[0]["data"] == {"version": 1, "priority": 5}
    assert events[3]["data"] == {"attempt": 1}
    assert events[3]["actor"].startswith("worker:")


def test_events_continue_from_a_cursor(api, finished_run):
    events = api.get(f"/api/v1/runs/{finished_run.pk}/events").json()

    response = api.get(f"/api/v1/runs/{finished_run.pk}/events?after={events[5]['id']}")

    assert response.status_code == 200
    assert response.json() == events[6:]


def test_a_bad_events_cursor_is_400(api, finished_run):
    response = api.get(f"/api/v1/runs/{finished_run.pk}/events?after=soon")

    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "after"
