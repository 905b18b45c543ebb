"""Workflow templates: the built-in pack, user templates with `(( name ))` parameters, the
orchestrator seed's pack, and instantiating one into a workflow through the service, the API,
the admin and the commands. alice is a superuser, bob a team member, charlie an outsider."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from flows import access
from flows import workflow_templates as service
from flows.language.errors import DefinitionError
from flows.models import Workflow, WorkflowGrant, WorkflowTemplate
from runs import services as run_services
from runs.models import Event, StepRun
from tests.conftest import drive

pytestmark = pytest.mark.django_db

SEED_PACK = Path("/work/shared/seed-assets/orchestrator/templates.json")
BUILTINS = sorted(t.name for t in service.builtin_templates())

GREETER = {
    "name": "greeter",
    "title": "Greeter",
    "category": "demo",
    "tags": ["demo", "noop"],
    "parameters": {
        "type": "object",
        "additionalProperties": False,
        "required": ["who"],
        "properties": {
            "who": {"type": "string"},
            "times": {"type": "integer", "minimum": 1, "default": 2},
        },
    },
    "definition": "steps:\n  hello:\n    type: noop\n    with: {greeting: hi ((who)), times: ((times))}\n",
}


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie", "c@example.com", "charlie-pw")


def client_for(user: Any) -> APIClient:
    access.forget(user)
    user.__dict__.pop("_perm_cache", None)
    user.__dict__.pop("_user_perm_cache", None)
    client = APIClient()
    client.force_authenticate(user)
    return client


def allow(user: Any, *codenames: str) -> None:
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))


@pytest.fixture
def greeter(api) -> WorkflowTemplate:
    assert api.post("/api/v1/templates", GREETER, format="json").status_code == 201
    return WorkflowTemplate.objects.get(name="greeter")


def sweep_parameters(httpserver, **more: Any) -> dict[str, Any]:
    return {
        "urls": [httpserver.url_for("/a"), httpserver.url_for("/b")],
        "alert_url": httpserver.url_for("/alert"),
        "attempts": 1,
        **more,
    }


# The built-in pack


def test_the_builtin_pack_is_in_the_database_after_migrate_and_read_only():
    rows = WorkflowTemplate.objects.filter(source="builtin")
    assert sorted(rows.values_list("name", flat=True)) == BUILTINS
    assert len(BUILTINS) >= 5
    assert all(row.title and row.description and row.tags for row in rows)


def test_syncing_the_builtins_again_changes_nothing_and_repairs_a_changed_one():
    assert service.sync_builtins() == {"added": [], "updated": [], "deleted": [], "skipped": []}
    WorkflowTemplate.objects.filter(name="incident-runbook").update(body="steps: {}")
    WorkflowTemplate.objects.create(name="retired", body="steps: {}", source="builtin")

    done = service.sync_builtins()

    assert done["updated"] == ["incident-runbook"]
    assert done["deleted"] == ["retired"]
    assert "((" in WorkflowTemplate.objects.get(name="incident-runbook").body


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_instantiates_with_its_defaults_into_a_valid_workflow(name, alice):
    template = WorkflowTemplate.objects.get(name=name)
    assert service.template_problems(template) == []

    done = service.instantiate(template, f"from-{name}", {}, actor="user:alice", user=alice)

    assert done.published.created
    assert done.workflow_created
    assert done.published.version.definition["name"] == f"from-{name}"
    assert "((" not in json.dumps(done.published.version.definition)


def test_the_health_sweep_runs_end_to_end_and_alerts_on_the_failing_url(alice, httpserver):
    httpserver.expect_request("/a").respond_with_json({"status": "ok"})
    httpserver.expect_request("/b").respond_with_data("down", status=503)
    httpserver.expect_request("/alert", method="POST").respond_with_json({"ok": True})
    template = WorkflowTemplate.objects.get(name="http-health-sweep")
    done = service.instantiate(template, "sweep", sweep_parameters(httpserver), user=alice)

    run = drive(run_services.start_run(done.published.version.workflow, {}))

    assert run.status == "succeeded", run.error
    steps = dict(StepRun.objects.filter(run=run, item_of=None).values_list("name", "status"))
    assert steps == {
        "probe": "succeeded",
        "verdict": "succeeded",
        "alert": "succeeded",
        "healthy": "skipped",
    }
    [(request, _)] = [entry for entry in httpserver.log if entry[0].path == "/alert"]
    alert = request.get_json()
    assert alert["text"] == "Health sweep: 1 of 2 endpoints failing"
    assert alert["urls"] == sweep_parameters(httpserver)["urls"]


def test_the_health_sweep_stays_quiet_when_every_url_answers(alice, httpserver):
    httpserver.expect_request("/a").respond_with_json({"status": "ok"})
    httpserver.expect_request("/b").respond_with_data("", status=401)
    template = WorkflowTemplate.objects.get(name="http-health-sweep")
    parameters = sweep_parameters(httpserver, expected_status=[401])
    done = service.instantiate(template, "sweep", parameters, user=alice)

    run = drive(run_services.start_run(done.published.version.workflow, {}))

    statuses = dict(StepRun.objects.filter(run=run).values_list("name", "status"))
    assert (statuses["healthy"], statuses["alert"]) == ("succeeded", "skipped")
    assert not [entry for entry in httpserver.log if entry[0].path == "/alert"]


def test_the_data_pipeline_fans_out_joins_and_loads(alice, httpserver):
    httpserver.expect_request("/extract").respond_with_json({"rows": 30})
    httpserver.expect_request("/process").respond_with_json({"done": True})
    httpserver.expect_request("/load").respond_with_json({"loaded": 3})
    template = WorkflowTemplate.objects.get(name="fan-out-data-pipeline")
    urls = {
        f"{stage}_url": httpserver.url_for(f"/{stage}") for stage in ("extract", "process", "load")
    }
    done = service.instantiate(
        template, "etl", {**urls, "partitions": ["eu", "us", "ap"], "attempts": 1}, user=alice
    )

    run = drive(run_services.start_run(done.published.version.workflow, {"batch": "b1"}))

    assert run.status == "succeeded", run.error
    processed = [e[0].get_json() for e in httpserver.log if e[0].path == "/process"]
    assert sorted(p["partition"] for p in processed) == ["ap", "eu", "us"]
    [load] = [e[0].get_json() for e in httpserver.log if e[0].path == "/load"]
    assert load["partitions"] == 3
    assert load["batch"] == "b1"


# Reading through the API


def test_anyone_signed_in_lists_and_reads_templates_and_nobody_else(charlie):
    assert APIClient().get("/api/v1/templates").status_code in (401, 403)
    client = client_for(charlie)
    listed = client.get("/api/v1/templates").json()
    assert sorted(row["name"] for row in listed["results"]) == BUILTINS
    detail = client.get("/api/v1/templates/deploy-with-approval").json()
    assert detail["source"] == "builtin"
    assert detail["defaults"]["environment"] == "production"
    assert "(( deploy_url ))" in detail["definition"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?source=user", ["greeter"]),
        ("?tag=approval", ["deploy-with-approval", "incident-runbook"]),
        ("?tag=APPROVAL", ["deploy-with-approval", "incident-runbook"]),
        ("?category=data", ["fan-out-data-pipeline"]),
        ("?search=backup", ["postgres-nightly-backup"]),
        ("?search=health sweep", ["http-health-sweep"]),
    ],
)
def test_the_list_filters_by_source_tag_category_and_words(api, greeter, query, expected):
    response = api.get(f"/api/v1/templates{query}")
    assert [row["name"] for row in response.json()["results"]] == expected


def test_an_unknown_source_filter_is_a_400(api):
    assert api.get("/api/v1/templates?source=nope").status_code == 400


def test_an_unknown_template_is_a_404(api):
    for response in (
        api.get("/api/v1/templates/nope"),
        api.put("/api/v1/templates/nope", GREETER, format="json"),
        api.delete("/api/v1/templates/nope"),
        api.post("/api/v1/templates/nope/instantiate", {"workflow": "x"}, format="json"),
    ):
        assert response.status_code == 404
        assert "message" in response.json()


# Writing through the API


def test_creating_a_user_template_records_who_and_an_event(api, alice):
    response = api.post("/api/v1/templates", GREETER, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["source"], body["created_by"], body["defaults"]) == ("user", "alice", {"times": 2})
    assert Event.objects.filter(type="template.created", actor="user:alice").exists()


def test_a_template_may_be_sent_with_its_definition_as_an_object(api):
    body = {**GREETER, "definition": {"steps": {"a": {"type": "noop", "with": {"w": "((who))"}}}}}
    response = api.post("/api/v1/templates", body, format="json")
    assert response.status_code == 201
    assert "((who))" in response.json()["definition"]


def test_a_template_name_that_is_taken_is_a_409(api, greeter):
    assert api.post("/api/v1/templates", GREETER, format="json").status_code == 409
    builtin = {**GREETER, "name": "incident-runbook"}
    assert api.post("/api/v1/templates", builtin, format="json").status_code == 409


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            {"definition": "steps: {a: {type: noop, with: {x: ((colour))}}}"},
            "definition.steps.a.with.x",
            "(( colour )) is not a parameter",
        ),
        (
            {"definition": "steps: {a: {type: shell, run: 'echo ((who))'}}"},
            "definition.steps.a.run",
            "could inject commands",
        ),
        ({"definition": "steps: [unclosed"}, "definition", "not valid YAML"),
        ({"definition": "steps: {a: {type: nope}}"}, "", "unknown step type"),
        ({"parameters": {"type": "array"}}, "parameters.type", "must be 'object'"),
        ({"name": "Bad Name"}, "name", "lowercase"),
        ({"name": "import"}, "name", "reserved"),
        ({"tags": ["Has Space"]}, "tags", "lowercase words"),
    ],
)
def test_a_bad_template_is_refused_with_the_path_of_each_problem(api, change, path, message):
    body = {**GREETER, "parameters": {**GREETER["parameters"], "required": []}, **change}
    body["parameters"]["properties"] = {**body["parameters"].get("properties", {})}
    if "who" in body["parameters"]["properties"]:
        body["parameters"]["properties"]["who"] = {"type": "string", "default": "you"}
    response = api.post("/api/v1/templates", body, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any(path in e["path"] and message in e["message"] for e in errors), errors
    assert not WorkflowTemplate.objects.filter(source="user").exists()


def test_an_unknown_field_is_refused(api):
    response = api.post("/api/v1/templates", {**GREETER, "colour": "red"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "colour", "message": "unknown field"}]


def test_builtins_refuse_every_change_with_a_409(api):
    before = WorkflowTemplate.objects.get(name="incident-runbook").body
    put = api.put(
        "/api/v1/templates/incident-runbook", {**GREETER, "name": "incident-runbook"}, format="json"
    )
    delete = api.delete("/api/v1/templates/incident-runbook")

    assert (put.status_code, delete.status_code) == (409, 409)
    assert "read-only" in put.json()["message"]
    assert WorkflowTemplate.objects.get(name="incident-runbook").body == before


def test_a_user_template_is_replaced_and_deleted(api, greeter):
    changed = {
        **GREETER,
        "title": "Hello",
        "definition": "steps: {a: {type: noop, with: {w: ((who))}}}",
    }
    del changed["name"]
    response = api.put("/api/v1/templates/greeter", changed, format="json")
    assert response.status_code == 200, response.json()
    assert WorkflowTemplate.objects.get(name="greeter").title == "Hello"

    assert api.delete("/api/v1/templates/greeter").status_code == 204
    assert not WorkflowTemplate.objects.filter(name="greeter").exists()
    assert Event.objects.filter(type="template.deleted", data__template="greeter").exists()


def test_writing_templates_needs_the_model_permissions(bob, greeter):
    client = client_for(bob)
    assert (
        client.post("/api/v1/templates", {**GREETER, "name": "mine"}, format="json").status_code
        == 403
    )
    assert client.put("/api/v1/templates/greeter", GREETER, format="json").status_code == 403
    assert client.delete("/api/v1/templates/greeter").status_code == 403

    allow(bob, "add_workflowtemplate", "change_workflowtemplate", "delete_workflowtemplate")
    client = client_for(bob)
    assert (
        client.post("/api/v1/templates", {**GREETER, "name": "mine"}, format="json").status_code
        == 201
    )
    assert client.delete("/api/v1/templates/greeter").status_code == 204


# Instantiating through the API


def test_instantiating_publishes_a_workflow_and_records_the_template_and_actor(api, greeter):
    response = api.post(
        "/api/v1/templates/greeter/instantiate",
        {"workflow": "hello", "parameters": {"who": "ada"}},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json() | {"content_hash": None} == {
        "template": "greeter",
        "workflow": "hello",
        "version": 1,
        "content_hash": None,
        "created": True,
        "workflow_created": True,
    }
    version = Workflow.objects.get(name="hello").latest_version
    assert version.definition["steps"]["hello"]["with"] == {"greeting": "hi ada", "times": 2}
    event = Event.objects.get(type="workflow.instantiated")
    assert event.actor == "user:alice"
    assert event.data == {
        "template": "greeter",
        "version": 1,
        "parameters": {"who": "ada", "times": 2},
    }


def test_instantiating_again_publishes_a_new_version_only_when_the_content_changes(api, greeter):
    url = "/api/v1/templates/greeter/instantiate"
    first = api.post(url, {"workflow": "hello", "parameters": {"who": "ada"}}, format="json")
    same = api.post(url, {"workflow": "hello", "parameters": {"who": "ada"}}, format="json")
    other = api.post(
        url, {"workflow": "hello", "parameters": {"who": "bo", "times": 5}}, format="json"
    )

    assert [r.status_code for r in (first, same, other)] == [201, 200, 201]
    assert other.json()["version"] == 2
    assert other.json()["workflow_created"] is False
    assert Event.objects.filter(type="workflow.instantiated").count() == 2


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"workflow": "w"}, "parameters", "'who' is a required property"),
        ({"workflow": "w", "parameters": {"who": 7}}, "parameters.who", "not of type 'string'"),
        ({"workflow": "w", "parameters": {"who": "a", "times": 0}}, "parameters.times", "minimum"),
        ({"workflow": "w", "parameters": {"who": "a", "x": 1}}, "parameters", "unknown parameter"),
        ({"workflow": "bad name!", "parameters": {"who": "a"}}, "name", "not a valid name"),
        ({"parameters": {"who": "a"}}, "workflow", "required"),
        ({"workflow": "w", "parameters": "who"}, "parameters", "dictionary"),
        ({"workflow": "w", "extra": 1}, "extra", "unknown field"),
    ],
)
def test_bad_parameters_are_refused_with_their_path_and_nothing_is_published(
    api, greeter, body, path, message
):
    response = api.post("/api/v1/templates/greeter/instantiate", body, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any(e["path"] == path and message in e["message"] for e in errors), errors
    assert not Workflow.objects.exists()


def test_a_definition_made_invalid_by_a_parameter_is_refused_with_its_path(api):
    response = api.post(
        "/api/v1/templates/http-health-sweep/instantiate",
        {"workflow": "sweep", "parameters": {"timeout": "soon"}},
        format="json",
    )
    assert response.status_code == 400
    assert any(e["path"] == "steps.probe.with.timeout" for e in response.json()["errors"])
    assert not Workflow.objects.exists()


def test_a_parameter_value_stays_one_value_however_it_looks(api, greeter):
    evil = 'x}\nsteps: {pwn: {type: shell, run: "id"}}'
    response = api.post(
        "/api/v1/templates/greeter/instantiate",
        {"workflow": "hello", "parameters": {"who": evil}},
        format="json",
    )
    assert response.status_code == 201
    definition = Workflow.objects.get(name="hello").latest_version.definition
    assert list(definition["steps"]) == ["hello"]
    assert definition["steps"]["hello"]["with"]["greeting"] == f"hi {evil}"


def test_a_new_workflow_needs_the_add_permission(bob, greeter):
    body = {"workflow": "bobs", "parameters": {"who": "bob"}}
    denied = client_for(bob).post("/api/v1/templates/greeter/instantiate", body, format="json")
    assert denied.status_code == 403
    assert not Workflow.objects.filter(name="bobs").exists()

    allow(bob, "add_workflow")
    allowed = client_for(bob).post("/api/v1/templates/greeter/instantiate", body, format="json")
    assert allowed.status_code == 201
    assert Event.objects.get(type="workflow.instantiated").actor == "user:bob"


def test_a_new_version_of_an_existing_workflow_needs_edit_on_it(api, bob, charlie, greeter):
    url = "/api/v1/templates/greeter/instantiate"
    api.post(url, {"workflow": "team", "parameters": {"who": "a"}}, format="json")
    workflow = Workflow.objects.get(name="team")
    allow(bob, "add_workflow")  # adding new workflows is not editing this one
    WorkflowGrant.objects.create(workflow=workflow, user=bob, role="run")
    body = {"workflow": "team", "parameters": {"who": "b"}}

    assert client_for(bob).post(url, body, format="json").status_code == 403
    assert client_for(charlie).post(url, body, format="json").status_code == 403
    WorkflowGrant.objects.create(workflow=workflow, user=bob, role="edit")
    assert client_for(bob).post(url, body, format="json").status_code == 201
    assert workflow.versions.count() == 2


# The orchestrator seed's pack


def test_the_seed_pack_imports_and_importing_again_changes_nothing(api):
    pack = json.loads(SEED_PACK.read_text())
    first = api.post("/api/v1/templates/import", pack, format="json")
    again = api.post("/api/v1/templates/import", pack, format="json")

    assert first.status_code == 200, first.json()
    assert first.json() == {
        "templates": [
            {"name": "intake_enrich_decide_act", "outcome": "created"},
            {"name": "detect_classify_route", "outcome": "created"},
        ]
    }
    assert [row["outcome"] for row in again.json()["templates"]] == ["unchanged", "unchanged"]
    assert WorkflowTemplate.objects.filter(source="imported").count() == 2


def test_an_imported_template_instantiates_into_the_seeds_chain_of_steps(api, alice):
    service.import_pack(json.loads(SEED_PACK.read_text()), actor="cli")
    template = WorkflowTemplate.objects.get(name="detect_classify_route")

    done = service.instantiate(template, "triage", {}, user=alice)

    steps = done.published.version.definition["steps"]
    assert steps["route"]["needs"] == ["classify"]
    assert steps["route"]["type"] == "http"


def test_an_imported_template_is_updated_by_name_when_the_pack_changes(api):
    pack = json.loads(SEED_PACK.read_text())
    api.post("/api/v1/templates/import", pack, format="json")
    pack["templates"][0]["description"] = "Changed"

    response = api.post("/api/v1/templates/import", pack, format="json")

    assert [row["outcome"] for row in response.json()["templates"]] == ["updated", "unchanged"]
    assert WorkflowTemplate.objects.get(name="intake_enrich_decide_act").description == "Changed"


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ({"nope": []}, "a template pack is"),
        (
            {
                "templates": [
                    {
                        "name": "ok",
                        "steps": [{"name": "a", "action": "http", "input": {"url": "http://x"}}],
                    },
                    {"name": "bad"},
                ]
            },
            "templates[1].steps",
        ),
        (
            {"templates": [{"name": "ok", "steps": [{"name": "a", "action": "teleport"}]}]},
            "unknown step type",
        ),
        (
            {
                "templates": [
                    {
                        "name": "incident-runbook",
                        "steps": [{"name": "a", "action": "http", "input": {"url": "http://x"}}],
                    }
                ]
            },
            "built-in",
        ),
        (
            {
                "templates": [
                    {
                        "name": "Bad Name",
                        "steps": [{"name": "a", "action": "http", "input": {"url": "http://x"}}],
                    }
                ]
            },
            "lowercase",
        ),
    ],
)
def test_a_malformed_pack_imports_nothing(api, pack, message):
    response = api.post("/api/v1/templates/import", pack, format="json")

    assert response.status_code == 400
    assert message in json.dumps(response.json()), response.json()
    assert not WorkflowTemplate.objects.exclude(source="builtin").exists()


def test_importing_needs_the_add_and_change_permissions(bob):
    pack = json.loads(SEED_PACK.read_text())
    allow(bob, "add_workflowtemplate")
    assert client_for(bob).post("/api/v1/templates/import", pack, format="json").status_code == 403
    allow(bob, "change_workflowtemplate")
    assert client_for(bob).post("/api/v1/templates/import", pack, format="json").status_code == 200


# Commands


def test_import_templates_imports_a_file_idempotently():
    out = StringIO()
    call_command("import_templates", str(SEED_PACK), stdout=out)
    call_command("import_templates", str(SEED_PACK), stdout=out)

    assert out.getvalue().splitlines() == [
        "created intake_enrich_decide_act",
        "created detect_classify_route",
        "unchanged intake_enrich_decide_act",
        "unchanged detect_classify_route",
    ]


def test_import_templates_refuses_a_malformed_file_and_imports_nothing(tmp_path):
    bad = tmp_path / "templates.json"
    bad.write_text(
        '{"templates": [{"name": "a", "steps": [{"name": "s", "action": "http", "input": {"url": "http://x"}}]}, {"name": "b"}]}'
    )
    out = StringIO()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_templates", str(bad), stdout=out)
    assert "templates[1].steps: required" in out.getvalue()
    assert not WorkflowTemplate.objects.exclude(source="builtin").exists()

    bad.write_text("{not json")
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_templates", str(bad), stdout=StringIO())


def test_instantiate_template_takes_params_from_flags_and_json(greeter):
    out = StringIO()
    call_command(
        "instantiate_template", "greeter", "hello",
        "--params-json", '{"who": "ada", "times": 3}', "--param", "who=007",
        stdout=out,
    )  # fmt: skip

    assert out.getvalue().strip() == "published hello v1"
    greeting = Workflow.objects.get(name="hello").latest_version.definition["steps"]["hello"]
    assert greeting["with"] == {"greeting": "hi 007", "times": 3}  # a string parameter stays text
    assert Event.objects.get(type="workflow.instantiated").actor == "cli"


def test_instantiate_template_reports_problems_and_refuses_users_without_rights(greeter, bob):
    out = StringIO()
    with pytest.raises(CommandError, match="nothing published"):
        call_command("instantiate_template", "greeter", "hello", "--param", "times=x", stdout=out)
    assert "parameters: required: 'who' is a required property" in out.getvalue()
    with pytest.raises(CommandError, match="may not publish"):
        call_command("instantiate_template", "greeter", "hello", "--param", "who=a", "--as", "bob")
    with pytest.raises(CommandError, match="no template named"):
        call_command("instantiate_template", "nope", "hello")
    assert not Workflow.objects.exists()


# The admin


def test_the_admin_lists_templates_and_shows_builtins_read_only(client, alice):
    client.force_login(alice)
    builtin = WorkflowTemplate.objects.get(name="http-health-sweep")
    listing = client.get(
        reverse("admin:flows_workflowtemplate_changelist") + "?source__exact=builtin"
    )
    page = client.get(reverse("admin:flows_workflowtemplate_change", args=[builtin.pk]))
    post = client.post(
        reverse("admin:flows_workflowtemplate_change", args=[builtin.pk]), {"title": "x"}
    )

    assert listing.status_code == 200
    assert "http-health-sweep" in listing.content.decode()
    assert page.status_code == 200
    assert 'name="body"' not in page.content.decode()
    assert post.status_code == 403
    assert WorkflowTemplate.objects.get(pk=builtin.pk).title != "x"


def test_the_admin_form_shows_template_problems_at_their_field(client, alice):
    client.force_login(alice)
    form = {
        "name": "mine",
        "title": "Mine",
        "tags": '["demo"]',
        "parameters": json.dumps(GREETER["parameters"]),
        "body": "steps: {a: {type: noop, with: {x: ((colour))}}}",
    }
    response = client.post(reverse("admin:flows_workflowtemplate_add"), form)

    assert response.status_code == 200
    assert "(( colour )) is not a parameter" in response.content.decode()
    assert not WorkflowTemplate.objects.filter(name="mine").exists()

    form["body"] = "steps: {a: {type: noop, with: {x: ((who))}}}"
    assert client.post(reverse("admin:flows_workflowtemplate_add"), form).status_code == 302
    assert WorkflowTemplate.objects.get(name="mine").created_by == alice


def test_the_admin_instantiate_page_prefills_defaults_shows_errors_and_publishes(client, alice):
    client.force_login(alice)
    template = WorkflowTemplate.objects.get(name="deploy-with-approval")
    url = reverse("admin:flows_workflowtemplate_instantiate", args=[template.pk])

    page = client.get(url).content.decode()
    assert "release-managers" in page
    assert "deploy-with-approval" in page

    bad = client.post(url, {"workflow": "ship", "parameters": '{"environment": "moon"}'})
    assert bad.status_code == 200
    assert "parameters.environment" in bad.content.decode()
    assert not Workflow.objects.filter(name="ship").exists()

    good = client.post(url, {"workflow": "ship", "parameters": '{"service": "api"}'})
    workflow = Workflow.objects.get(name="ship")
    assert good.status_code == 302
    assert good["Location"].endswith(f"/{workflow.pk}/change/")
    assert Event.objects.get(type="workflow.instantiated").actor == "user:alice"


def test_the_admin_instantiate_page_refuses_what_the_user_may_not_publish(client, bob):
    bob.is_staff = True
    bob.save()
    allow(bob, "view_workflowtemplate")
    client.force_login(bob)
    template = WorkflowTemplate.objects.get(name="incident-runbook")
    url = reverse("admin:flows_workflowtemplate_instantiate", args=[template.pk])

    response = client.post(url, {"workflow": "ops", "parameters": "{}"})

    assert response.status_code == 200
    assert "you may not publish workflow" in response.content.decode()
    assert not Workflow.objects.exists()


def test_a_template_that_breaks_the_definition_language_cannot_be_saved_by_the_service():
    template = WorkflowTemplate(name="x", body="steps: {a: {type: noop, needs: [b]}}")
    with pytest.raises(DefinitionError, match=r"definition\.steps\.a\.needs"):
        service.save_template(template)
