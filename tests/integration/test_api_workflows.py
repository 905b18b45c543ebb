"""The workflow API: publishing (POST, PUT), reading, authentication, and hostile bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from rest_framework.test import APIClient

from flows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

LIST = "/api/v1/workflows"

DEFINITION: dict[str, Any] = {
    "name": "deploy",
    "description": "Build, then deploy",
    "input": {"type": "object", "properties": {"env": {"type": "string", "default": "staging"}}},
    "steps": {
        "build": {"type": "shell", "run": "echo build"},
        "deploy": {"type": "noop", "needs": ["build"], "with": {"env": "{{ input.env }}"}},
    },
}

YAML_SOURCE = """\
# a comment that only the source keeps
name: deploy
description: Build, then deploy
input:
  type: object
  properties:
    env: {type: string, default: staging}
steps:
  build:
    type: shell
    run: echo build
  deploy:
    type: noop
    needs: [build]
    with: {env: "{{ input.env }}"}
"""


def stored() -> tuple[int, int]:
    return Workflow.objects.count(), WorkflowVersion.objects.count()


def changed(definition: dict[str, Any]) -> dict[str, Any]:
    return {**definition, "description": "Build, test, then deploy"}


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def published(api: APIClient) -> dict[str, Any]:
    response = api.post(LIST, {"definition": DEFINITION}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# Publishing


def test_post_with_a_definition_object_creates_version_1(api, alice):
    response = api.post(LIST, {"definition": DEFINITION}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "deploy"
    assert body["version"] == 1
    assert body["created"] is True
    assert len(body["content_hash"]) == 64
    version = WorkflowVersion.objects.get()
    assert version.workflow.name == "deploy"
    assert version.workflow.latest_version == version
    assert version.workflow.description == "Build, then deploy"
    assert version.definition == DEFINITION
    assert version.content_hash == body["content_hash"]
    assert version.created_by == alice
    assert yaml.safe_load(version.source) == DEFINITION


def test_post_with_a_yaml_string_definition_keeps_the_source_text(api):
    response = api.post(LIST, {"definition": YAML_SOURCE}, format="json")

    assert response.status_code == 201
    assert response.json()["version"] == 1
    version = WorkflowVersion.objects.get()
    assert version.definition == DEFINITION
    assert version.source == YAML_SOURCE


def test_post_with_a_raw_yaml_body_keeps_the_source_text(api):
    response = api.post(LIST, data=YAML_SOURCE, content_type="application/yaml")

    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "deploy"
    assert response.json()["version"] == 1
    version = WorkflowVersion.objects.get()
    assert version.definition == DEFINITION
    assert version.source == YAML_SOURCE


def test_the_same_definition_in_json_and_yaml_has_the_same_content_hash(api):
    first = api.post(LIST, {"definition": DEFINITION}, format="json").json()
    again = api.put(f"{LIST}/deploy", data=YAML_SOURCE, content_type="application/yaml")

    assert again.status_code == 200, again.json()
    assert again.json()["content_hash"] == first["content_hash"]
    assert WorkflowVersion.objects.count() == 1


def test_an_identical_put_creates_nothing(api, published):
    response = api.put(f"{LIST}/deploy", {"definition": DEFINITION}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["created"] is False
    assert body["version"] == 1
    assert body["content_hash"] == published["content_hash"]
    assert stored() == (1, 1)


def test_a_changed_put_publishes_version_2(api, published):
    response = api.put(f"{LIST}/deploy", {"definition": changed(DEFINITION)}, format="json")

    assert response.status_code == 201
    assert response.json()["version"] == 2
    assert response.json()["created"] is True
    workflow = Workflow.objects.get()
    assert list(workflow.versions.order_by("number").values_list("number", flat=True)) == [1, 2]
    assert workflow.latest_version.number == 2
    assert workflow.description == "Build, test, then deploy"


def test_put_without_a_name_takes_the_name_from_the_url(api):
    definition = {key: value for key, value in DEFINITION.items() if key != "name"}

    response = api.put(f"{LIST}/deploy", {"definition": definition}, format="json")

    assert response.status_code == 201
    assert Workflow.objects.get().name == "deploy"


def test_post_of_an_existing_name_is_a_conflict(api, published):
    response = api.post(LIST, {"definition": changed(DEFINITION)}, format="json")

    assert response.status_code == 409
    assert "already exists" in response.json()["message"]
    assert stored() == (1, 1)


def test_put_with_a_name_other_than_the_urls_is_refused(api, published):
    response = api.put(
        f"{LIST}/deploy", {"definition": {**DEFINITION, "name": "other"}}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert "message" in body
    assert [error["path"] for error in body["errors"]] == ["name"]
    assert "does not match" in body["errors"][0]["message"]
    assert stored() == (1, 1)


# Reading


def test_list_shows_each_workflow_with_its_latest_version(api, published):
    api.put(f"{LIST}/deploy", {"definition": changed(DEFINITION)}, format="json")
    api.put(f"{LIST}/other", {"definition": {**DEFINITION, "name": "other"}}, format="json")

    response = api.get(LIST)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    by_name = {row["name"]: row for row in body["results"]}
    assert by_name["deploy"]["version"] == 2
    assert by_name["other"]["version"] == 1
    assert set(by_name["deploy"]) == {"name", "description", "version", "created_at", "updated_at"}


def test_detail_shows_the_latest_definition(api, published):
    response = api.get(f"{LIST}/deploy")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "deploy"
    assert body["version"] == 1
    assert body["definition"] == DEFINITION


def test_versions_lists_every_version_and_each_has_its_own_page(api, alice, published):
    api.put(f"{LIST}/deploy", {"definition": changed(DEFINITION)}, format="json")

    versions = api.get(f"{LIST}/deploy/versions")
    first = api.get(f"{LIST}/deploy/versions/1")
    second = api.get(f"{LIST}/deploy/versions/2")

    assert versions.status_code == 200
    rows = versions.json()["results"]
    assert sorted(row["version"] for row in rows) == [1, 2]
    assert {row["workflow"] for row in rows} == {"deploy"}
    assert {row["created_by"] for row in rows} == {"alice"}
    assert first.status_code == 200
    assert first.json()["definition"] == DEFINITION
    assert first.json()["content_hash"] == published["content_hash"]
    assert second.json()["definition"] == changed(DEFINITION)
    assert "source" in second.json()


@pytest.mark.parametrize(
    "path",
    [
        f"{LIST}/nope",
        f"{LIST}/nope/versions",
        f"{LIST}/nope/versions/1",
        f"{LIST}/deploy/versions/9",
    ],
)
def test_unknown_workflows_and_versions_are_404(api, published, path):
    response = api.get(path)

    assert response.status_code == 404
    assert "message" in response.json()


# Authentication

ENDPOINTS = [
    ("get", LIST),
    ("post", LIST),
    ("get", f"{LIST}/deploy"),
    ("put", f"{LIST}/deploy"),
    ("get", f"{LIST}/deploy/versions"),
    ("get", f"{LIST}/deploy/versions/1"),
    ("get", f"{LIST}/deploy/runs"),
    ("post", f"{LIST}/deploy/runs"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/00000000-0000-0000-0000-000000000000"),
    ("get", "/api/v1/runs/00000000-0000-0000-0000-000000000000/logs"),
    ("get", "/api/v1/runs/00000000-0000-0000-0000-000000000000/events"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_api_endpoint_refuses_anonymous_clients(anonymous, published, method, path):
    response = getattr(anonymous, method)(path, {"definition": DEFINITION}, format="json")

    assert response.status_code in (401, 403)
    assert "message" in response.json()
    assert stored() == (1, 1)


def test_health_answers_without_authentication(anonymous):
    response = anonymous.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# Invalid definitions


def test_an_invalid_definition_lists_every_problem_with_its_path_and_stores_nothing(api):
    definition = {
        "name": "bad name!",
        "colour": "blue",
        "steps": {
            "build": {"type": "shel", "run": "make"},
            "deploy": {"type": "noop", "needs": ["biuld"], "retry": {"max_attempts": 0}},
            "notify": {"type": "noop", "with": {"text": "{{ steps.deploy.output }}"}},
        },
    }

    response = api.post(LIST, {"definition": definition}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("invalid definition")
    paths = {error["path"] for error in body["errors"]}
    assert paths == {
        "name",
        "colour",
        "steps.build.type",
        "steps.deploy.needs[0]",
        "steps.deploy.retry.max_attempts",
        "steps.notify.with.text",
    }
    assert {
        "path": "steps.deploy.needs[0]",
        "message": "unknown step 'biuld' (did you mean 'build'?)",
    } in body["errors"]
    assert stored() == (0, 0)


def test_a_cycle_is_reported_and_nothing_is_stored(api):
    definition = {
        "name": "loop",
        "steps": {"a": {"type": "noop", "needs": ["b"]}, "b": {"type": "noop", "needs": ["a"]}},
    }

    response = api.post(LIST, {"definition": definition}, format="json")

    assert response.status_code == 400
    assert any("cycle" in error["message"] for error in response.json()["errors"])
    assert stored() == (0, 0)


def test_an_invalid_new_version_leaves_the_published_one_alone(api, published):
    broken = {**DEFINITION, "steps": {"build": {"type": "shell"}}}

    response = api.put(f"{LIST}/deploy", {"definition": broken}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"]
    assert stored() == (1, 1)
    assert Workflow.objects.get().latest_version.number == 1


# Hostile and malformed bodies


def nested_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def nested_yaml(depth: int) -> str:
    return "[" * depth + "]" * depth


MUST_BE_OBJECT = "the definition must be an object"
BAD_BODIES = {
    "broken json": ("{{{: [", "application/json", "not valid JSON"),
    "broken yaml": ("{{{: [", "application/yaml", "not valid YAML"),
    "json nested 10000 deep": (nested_json(10_000), "application/json", "nested too deeply"),
    "yaml nested 10000 deep": (nested_yaml(10_000), "application/yaml", "nested too deeply"),
    "definition text nested 10000 deep": (
        json.dumps({"definition": nested_yaml(10_000)}),
        "application/json",
        "nested too deeply",
    ),
    "json array": (json.dumps([DEFINITION]), "application/json", MUST_BE_OBJECT),
    "yaml list": ("- name: deploy\n", "application/yaml", MUST_BE_OBJECT),
    "a number as definition": (json.dumps({"definition": 42}), "application/json", MUST_BE_OBJECT),
    "a list as definition": (json.dumps({"definition": [1]}), "application/json", MUST_BE_OBJECT),
    "an unknown field beside definition": (
        json.dumps({"definition": DEFINITION, "extra": 1}),
        "application/json",
        "extra: unknown field",
    ),
    "empty yaml": ("", "application/yaml", "invalid definition"),
    "not utf-8": (b"name: \xff\xfe", "application/yaml", "request body"),
    "duplicate keys": (
        "name: a\nname: b\nsteps: {a: {type: noop}}\n",
        "application/yaml",
        "duplicate key 'name'",
    ),
    # PostgreSQL stores no NUL: found by tests/integration/test_fuzz_api.py (a 500 there).
    "a NUL in JSON": (
        '{"name": "a\\u0000", "steps": {"a": {"type": "noop"}}}',
        "application/json",
        "NUL character",
    ),
    "a NUL in YAML": (
        'name: "a\\0"\nsteps: {a: {type: noop}}\n',
        "application/yaml",
        "NUL character",
    ),
    "a python tag": (
        "!!python/object/apply:os.system ['true']",
        "application/yaml",
        "not valid YAML",
    ),
}


@pytest.mark.parametrize(
    ("body", "content_type", "expected"), BAD_BODIES.values(), ids=BAD_BODIES.keys()
)
@pytest.mark.parametrize("method", ["post", "put"])
def test_a_malformed_body_is_a_clear_400_and_stores_nothing(
    api, method, body, content_type, expected
):
    path = LIST if method == "post" else f"{LIST}/deploy"

    response = getattr(api, method)(path, data=body, content_type=content_type)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert expected in response.json()["message"]
    assert stored() == (0, 0)


def test_an_unknown_field_beside_definition_is_named(api):
    response = api.post(LIST, {"definition": DEFINITION, "extra": 1}, format="json")

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == ["extra"]


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
def test_a_body_over_1_mb_is_refused(api, content_type):
    padding = "x" * (1024 * 1024)
    definition = {**DEFINITION, "description": padding}
    body = json.dumps({"definition": definition})

    response = api.post(LIST, data=body, content_type=content_type)

    assert response.status_code == 413
    assert "larger than the limit" in response.json()["message"]
    assert stored() == (0, 0)


def test_a_yaml_string_definition_over_1_mb_is_refused(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024  # let the body through; the text is big
    text = YAML_SOURCE + "#" + "x" * (1024 * 1024) + "\n"

    response = api.post(LIST, {"definition": text}, format="json")

    assert response.status_code == 400
    assert "limit" in response.json()["message"]
    assert stored() == (0, 0)


@pytest.mark.parametrize(
    "path", ["/api/v1/workflows/a%00b", "/api/v1/secrets/x%00", "/hooks/a%00b", "/health%00"]
)
def test_a_nul_in_the_path_is_a_400_not_a_server_error(api, path):
    response = api.get(path)
    assert response.status_code == 400
    assert "NUL" in response.json()["message"]
