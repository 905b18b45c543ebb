"""The step library through the real engine: branches and joins, data passing, waiting steps
(delay, http_async callbacks, subflows), for_each fan-out, scripts and transforms.

Steps run in this process through the worker and tick code the Django-Q2 task and the tick loop
call (tests/conftest.py, `drive`); HTTP services are real local servers (pytest-httpserver).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from flows.language.errors import DefinitionError
from runs import services
from runs.models import Callback, Event, Run, StepRun
from runs.timers import tick
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db


def statuses(run: Run) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run).values_list("name", "status"))


def output(run: Run, name: str) -> Any:
    return StepRun.objects.get(run=run, name=name).output


def start(workflow: Any, data: Any = None) -> Run:
    return services.start_run(workflow, data or {})


def run_ready(run: Run) -> int:
    ready = list(StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt"))
    for pk, attempt in ready:
        run_attempt(pk, attempt)
    return len(ready)


# Branches and joins


BRANCHING = """
name: branching
input:
  type: object
  properties: {env: {type: string}}
steps:
  check:
    type: condition
    with:
      value: "{{ input.env }}"
      equals: prod
      then: [deploy]
      else: [preview]
  deploy: {type: noop, needs: [check], with: {where: prod}}
  preview: {type: noop, needs: [check], with: {where: preview}}
  announce:
    type: noop
    needs: [deploy, preview]
    join: any_succeeded
    with: {done: true}
  strict:
    type: noop
    needs: [deploy, preview]
  cleanup:
    type: noop
    needs: [deploy, preview]
    join: none_failed
"""


@pytest.mark.parametrize(
    ("env", "taken", "not_taken"), [("prod", "deploy", "preview"), ("dev", "preview", "deploy")]
)
def test_a_condition_runs_one_branch_and_joins_follow_their_rule(publish, env, taken, not_taken):
    run = drive(start(publish(BRANCHING), {"env": env}))

    assert run.status == "succeeded"
    assert statuses(run) == {
        "check": "succeeded",
        taken: "succeeded",
        not_taken: "skipped",
        "announce": "succeeded",  # any_succeeded: one branch is enough
        "strict": "skipped",  # all_succeeded (default): a branch not taken skips it
        "cleanup": "succeeded",  # none_failed: skipped parents are fine
    }
    assert output(run, "check")["branch"] == ("then" if env == "prod" else "else")
    reason = (
        Event.objects.filter(run=run, step_run__name=not_taken, type="step.skipped")
        .values_list("data", flat=True)
        .get()
    )
    assert "not chosen" in reason["reason"]


def test_all_done_runs_after_a_failure_and_the_run_still_fails(publish):
    workflow = publish(
        {
            "name": "cleanup-after-failure",
            "steps": {
                "work": {"type": "shell", "run": "exit 4"},
                "cleanup": {
                    "type": "shell",
                    "run": "echo cleaned",
                    "needs": ["work"],
                    "join": "all_done",
                },
                "report": {"type": "noop", "needs": ["work"]},
            },
        }
    )
    run = drive(start(workflow))

    assert statuses(run) == {"work": "failed", "cleanup": "succeeded", "report": "skipped"}
    assert run.status == "failed"


@pytest.mark.parametrize(
    ("on_false", "expected_run", "expected_next"),
    [
        ("stop", "succeeded", "skipped"),
        ("fail", "failed", "skipped"),
        ("continue", "succeeded", "succeeded"),
    ],
)
def test_the_orchestrator_seeds_condition_on_false_rules(
    publish, on_false, expected_run, expected_next
):
    workflow = publish(
        {
            "name": f"cond-{on_false}",
            "steps": {
                "gate": {
                    "type": "condition",
                    "with": {"key": "input.mode", "equals": "go", "on_false": on_false},
                },
                "next": {"type": "noop", "needs": ["gate"]},
            },
        }
    )
    run = drive(start(workflow, {"mode": "stay"}))

    assert run.status == expected_run
    assert statuses(run)["next"] == expected_next


def test_a_branch_naming_a_step_that_does_not_follow_the_condition_is_refused(publish):
    with pytest.raises(DefinitionError) as excinfo:
        publish(
            {
                "name": "bad-branch",
                "steps": {
                    "check": {"type": "condition", "with": {"value": True, "then": ["elsewhere"]}},
                    "elsewhere": {"type": "noop"},
                },
            }
        )
    assert [str(p) for p in excinfo.value.problems] == [
        "steps.check.with.then[0]: 'elsewhere' is not a step that needs 'check' "
        "(steps that need it: none)"
    ]


def test_a_lua_when_guard_decides_whether_the_step_runs(publish):
    workflow = publish(
        {
            "name": "lua-when",
            "steps": {
                "big": {"type": "noop", "when": {"lua": "return input.size > 10"}},
                "small": {"type": "noop", "when": {"lua": "input.size <= 10"}},
            },
        }
    )
    run = drive(start(workflow, {"size": 42}))

    assert statuses(run) == {"big": "succeeded", "small": "skipped"}


def test_a_lua_when_guard_with_a_syntax_error_is_refused_at_publish_time(publish):
    with pytest.raises(DefinitionError) as excinfo:
        publish({"name": "bad-lua", "steps": {"a": {"type": "noop", "when": {"lua": "return ("}}}})
    [problem] = excinfo.value.problems
    assert problem.path == "steps.a.when.lua"


# Data passing


def test_parent_parents_and_hyphenated_names_reach_templates_and_scripts(publish):
    workflow = publish(
        {
            "name": "data-passing",
            "steps": {
                "fetch-user": {"type": "noop", "with": {"name": "ada", "age": 36}},
                "fetch-orders": {"type": "noop", "with": {"count": 3}},
                "greet": {
                    "type": "noop",
                    "needs": ["fetch-user"],
                    "with": {"text": "hello {{ parent.name }} ({{ steps.fetch_user.output.age }})"},
                },
                "summary": {
                    "type": "script",
                    "needs": ["fetch-user", "fetch-orders"],
                    "with": {
                        "lua": "return {who = input['fetch-user'].name, n = input['fetch-orders'].count}"
                    },
                },
                "both": {
                    "type": "noop",
                    "needs": ["fetch-user", "fetch-orders"],
                    "with": {"n": "{{ parents.fetch_orders.count }}"},
                },
            },
        }
    )
    run = drive(start(workflow))

    assert run.status == "succeeded", run.error
    assert output(run, "greet") == {"text": "hello ada (36)"}
    assert output(run, "summary") == {"who": "ada", "n": 3}
    assert output(run, "both") == {"n": 3}


def test_parent_in_a_step_with_two_needs_is_refused_at_publish_time(publish):
    with pytest.raises(DefinitionError) as excinfo:
        publish(
            {
                "name": "ambiguous-parent",
                "steps": {
                    "a": {"type": "noop"},
                    "b": {"type": "noop"},
                    "c": {"type": "noop", "needs": ["a", "b"], "with": {"x": "{{ parent.x }}"}},
                },
            }
        )
    [problem] = excinfo.value.problems
    assert problem.path == "steps.c.with.x"
    assert "exactly one need" in problem.message


# Transform and script


def test_a_transform_queries_earlier_outputs_with_jmespath_and_renders_json(publish):
    workflow = publish(
        {
            "name": "transform",
            "steps": {
                "catalogue": {
                    "type": "noop",
                    "with": {
                        "items": [{"name": "pen", "price": 2}, {"name": "desk", "price": 120}]
                    },
                },
                "pricey": {
                    "type": "transform",
                    "needs": ["catalogue"],
                    "with": {
                        "jmespath": "parent.items[?price > `10`].name",
                        "template": '{"names": {{ result | tojson }}, "count": {{ result | length }}}',
                    },
                },
            },
        }
    )
    run = drive(start(workflow))

    assert run.status == "succeeded", run.error
    assert output(run, "pricey") == {"names": ["desk"], "count": 1}


def test_a_bad_jmespath_is_refused_at_publish_time_with_its_path(publish):
    with pytest.raises(DefinitionError) as excinfo:
        publish(
            {"name": "bad-jp", "steps": {"t": {"type": "transform", "with": {"jmespath": "a[?"}}}}
        )
    [problem] = excinfo.value.problems
    assert problem.path == "steps.t.with.jmespath"


def test_a_script_that_loops_forever_fails_its_step_and_the_run_goes_on(publish):
    workflow = publish(
        {
            "name": "runaway",
            "steps": {
                "loop": {
                    "type": "script",
                    "with": {"lua": "while true do end", "instruction_limit": 100000},
                    "on_failure": "continue",
                },
                "after": {
                    "type": "script",
                    "needs": ["loop"],
                    "with": {"lua": "return {ok = true}"},
                },
            },
        }
    )
    run = drive(start(workflow))

    assert statuses(run) == {"loop": "failed", "after": "succeeded"}
    assert "instruction budget" in StepRun.objects.get(run=run, name="loop").error


# Typos in `with` are caught at publish time, for every type


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"type": "delay", "with": {"fro": "1s"}}, "steps.s.with.fro"),
        (
            {"type": "http_async", "with": {"url": "http://x", "methd": "POST"}},
            "steps.s.with.methd",
        ),
        ({"type": "subflow", "with": {"workflw": "child"}}, "steps.s.with.workflw"),
        ({"type": "transform", "with": {"jmespth": "a"}}, "steps.s.with.jmespth"),
        ({"type": "condition", "with": {"value": 1, "equal": 1}}, "steps.s.with.equal"),
        ({"type": "script", "with": {"lua": "return 1", "budget": 5}}, "steps.s.with.budget"),
        ({"type": "noop", "parallelism": 3}, "steps.s.parallelism"),
        ({"type": "noop", "join": "some"}, "steps.s.join"),
    ],
)
def test_a_typo_in_a_step_is_reported_with_its_path(publish, step, path):
    with pytest.raises(DefinitionError) as excinfo:
        publish({"name": "typo", "steps": {"s": step}})
    assert path in [problem.path for problem in excinfo.value.problems]


def test_step_types_are_listed_with_their_schemas(api):
    response = api.get("/api/v1/step-types")

    assert response.status_code == 200
    types = {entry["type"]: entry for entry in response.json()}
    for builtin in (
        "noop",
        "shell",
        "http",
        "http_async",
        "script",
        "transform",
        "condition",
        "delay",
        "subflow",
    ):
        assert types[builtin]["description"]
        assert types[builtin]["config_schema"]["type"] == "object"
    assert api.get("/api/v1/step-types/delay").json()["type"] == "delay"
    assert api.get("/api/v1/step-types/nope").status_code == 404


def test_step_types_need_authentication(client):
    assert client.get("/api/v1/step-types").status_code in (401, 403)


# Delay


def test_a_delay_waits_holding_no_worker_and_the_timer_ends_it(publish):
    workflow = publish(
        {
            "name": "delayed",
            "steps": {
                "wait": {"type": "delay", "with": {"for": "1h"}},
                "after": {"type": "noop", "needs": ["wait"]},
            },
        }
    )
    run = start(workflow)
    run_ready(run)

    waiting = StepRun.objects.get(run=run, name="wait")
    assert waiting.status == "waiting"
    assert waiting.lease_expires_at is None  # no worker holds it
    assert tick() == 0  # not due yet

    # Time passes (a restart in between changes nothing: the timer is a row).
    later = timezone.now() + timedelta(hours=1, seconds=1)
    tick(later)
    assert StepRun.objects.get(run=run, name="wait").status == "succeeded"
    run = drive(run)
    assert run.status == "succeeded"
    assert statuses(run) == {"wait": "succeeded", "after": "succeeded"}


def test_a_delay_until_a_past_time_ends_at_the_next_tick(publish):
    workflow = publish(
        {
            "name": "past",
            "steps": {"wait": {"type": "delay", "with": {"until": "2020-01-01T00:00:00Z"}}},
        }
    )
    run = drive(start(workflow))
    assert run.status == "succeeded"


# http_async


def _callback_token(httpserver) -> str:
    request, _ = httpserver.log[-1]
    url = request.get_json()["callback_url"]
    assert request.headers["X-Furrow-Callback-URL"] == url
    return url.rsplit("/", 1)[1]


def _async_workflow(publish, httpserver, timeout: str = "1h") -> Any:
    httpserver.expect_request("/jobs", method="POST").respond_with_json({"accepted": True})
    return publish(
        {
            "name": "async",
            "steps": {
                "job": {
                    "type": "http_async",
                    "timeout": timeout,
                    "with": {"url": httpserver.url_for("/jobs"), "json": {"size": 3}},
                },
                "after": {"type": "noop", "needs": ["job"], "with": {"got": "{{ parent.answer }}"}},
            },
        }
    )


def test_http_async_waits_for_its_callback_and_takes_its_output(publish, httpserver, client):
    run = start(_async_workflow(publish, httpserver))
    run_ready(run)

    assert StepRun.objects.get(run=run, name="job").status == "waiting"
    assert httpserver.log[-1][0].get_json()["size"] == 3
    token = _callback_token(httpserver)
    assert not Callback.objects.filter(token_hash=token).exists()  # only its hash is stored

    response = client.post(
        f"/api/v1/callbacks/{token}", {"output": {"answer": 42}}, content_type="application/json"
    )
    assert response.status_code == 200, response.content

    run = drive(run)
    assert run.status == "succeeded"
    assert output(run, "after") == {"got": 42}

    again = client.post(
        f"/api/v1/callbacks/{token}", {"output": {}}, content_type="application/json"
    )
    assert again.status_code == 410
    assert "already used" in again.json()["message"]


def test_a_spuds_style_failure_callback_fails_the_step(publish, httpserver, client):
    run = start(_async_workflow(publish, httpserver))
    run_ready(run)
    token = _callback_token(httpserver)

    response = client.post(
        f"/api/v1/callbacks/{token}",
        {"success": False, "error": "card declined"},
        content_type="application/json",
    )
    assert response.status_code == 200
    run = drive(run)
    assert run.status == "failed"
    assert StepRun.objects.get(run=run, name="job").error == "card declined"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([1, 2], ""),
        ({"output": "text"}, "output"),
        ({"outputs": [1]}, "outputs"),
        ({"error": 5}, "error"),
        ({"success": "yes"}, "success"),
        ({"result": {}}, "result"),
    ],
)
def test_a_malformed_callback_is_a_400_and_leaves_the_token_usable(
    publish, httpserver, client, body, path
):
    run = start(_async_workflow(publish, httpserver))
    run_ready(run)
    token = _callback_token(httpserver)
    before = list(Event.objects.filter(run=run).values_list("id", flat=True))

    bad = client.post(
        f"/api/v1/callbacks/{token}", json.dumps(body), content_type="application/json"
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["path"] == path
    assert list(Event.objects.filter(run=run).values_list("id", flat=True)) == before
    assert StepRun.objects.get(run=run, name="job").status == "waiting"

    good = client.post(
        f"/api/v1/callbacks/{token}", {"output": {"answer": 1}}, content_type="application/json"
    )
    assert good.status_code == 200


def test_a_wrong_token_is_a_404_and_an_expired_one_a_410(publish, httpserver, client):
    run = start(_async_workflow(publish, httpserver))
    run_ready(run)
    token = _callback_token(httpserver)

    assert (
        client.post(
            "/api/v1/callbacks/not-a-token", {}, content_type="application/json"
        ).status_code
        == 404
    )
    Callback.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = client.post(
        f"/api/v1/callbacks/{token}", {"output": {}}, content_type="application/json"
    )
    assert expired.status_code == 410
    assert "expired" in expired.json()["message"]
    assert StepRun.objects.get(run=run, name="job").status == "waiting"


def test_no_callback_within_the_timeout_fails_the_step_and_a_late_one_is_gone(
    publish, httpserver, client
):
    run = start(_async_workflow(publish, httpserver, timeout="1h"))
    run_ready(run)
    token = _callback_token(httpserver)

    tick(timezone.now() + timedelta(hours=1, seconds=1))
    run.refresh_from_db()
    assert run.status == "failed"
    assert "no callback" in StepRun.objects.get(run=run, name="job").error
    late = client.post(
        f"/api/v1/callbacks/{token}", {"output": {}}, content_type="application/json"
    )
    assert late.status_code == 410


def test_a_callback_that_arrives_before_the_step_is_parked_is_kept_and_applied(publish, httpserver):
    run = start(_async_workflow(publish, httpserver))
    job = StepRun.objects.get(run=run, name="job")
    claimed = services.claim(job.pk, job.attempt, "test-worker")
    assert claimed is not None
    token = services.issue_callback(job, job.attempt, timezone.now() + timedelta(hours=1))

    # The service answers while the worker is still inside its POST.
    services.deliver_callback(token, services.StepResult.success({"answer": 7}))
    assert StepRun.objects.get(pk=job.pk).status == "running"

    from steps.executors.base import StepResult, Wait

    services.finish(
        claimed.step,
        job.attempt,
        StepResult.waiting(
            Wait(
                kind="callback",
                until=timezone.now() + timedelta(hours=1),
                on_due=StepResult.failure("late"),
            )
        ),
    )
    run = drive(run)
    assert run.status == "succeeded"
    assert output(run, "job") == {"answer": 7}


def test_a_service_that_refuses_the_request_fails_the_attempt(publish, httpserver):
    httpserver.expect_request("/jobs", method="POST").respond_with_data("no", status=503)
    workflow = publish(
        {
            "name": "refused",
            "steps": {"job": {"type": "http_async", "with": {"url": httpserver.url_for("/jobs")}}},
        }
    )
    run = drive(start(workflow))
    assert run.status == "failed"
    assert "HTTP 503" in StepRun.objects.get(run=run, name="job").error


# Subflows


CHILD = {
    "name": "child",
    "input": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "steps": {"double": {"type": "noop", "with": {"value": "{{ input.n * 2 }}"}}},
}


def test_a_subflow_runs_the_child_and_takes_its_output(publish):
    publish(CHILD)
    parent = publish(
        {
            "name": "parent",
            "steps": {
                "call": {"type": "subflow", "with": {"workflow": "child", "input": {"n": 21}}},
                "use": {
                    "type": "noop",
                    "needs": ["call"],
                    "with": {"v": "{{ parent.double.value }}"},
                },
            },
        }
    )
    run = drive(start(parent))

    assert run.status == "succeeded", run.error
    assert output(run, "use") == {"v": 42}
    child = Run.objects.get(parent_step__run=run)
    assert child.depth == 1
    assert child.status == "succeeded"


def test_a_subflow_can_pin_a_version(publish):
    publish(CHILD)
    publish({**CHILD, "steps": {"double": {"type": "noop", "with": {"value": "v2"}}}})
    parent = publish(
        {
            "name": "pinned",
            "steps": {
                "call": {
                    "type": "subflow",
                    "with": {"workflow": "child", "version": 1, "input": {"n": 1}},
                }
            },
        }
    )
    run = drive(start(parent))
    assert output(run, "call") == {"double": {"value": 2}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"workflow": "missing"}, "sub-workflow 'missing' does not exist"),
        (
            {"workflow": "child", "version": 9, "input": {"n": 1}},
            "sub-workflow 'child' has no version 9",
        ),
        ({"workflow": "child", "input": {"n": "x"}}, "input for sub-workflow 'child' is invalid"),
    ],
)
def test_a_subflow_that_cannot_start_fails_its_step_clearly(publish, config, message):
    publish(CHILD)
    parent = publish(
        {"name": "broken-parent", "steps": {"call": {"type": "subflow", "with": config}}}
    )
    run = drive(start(parent))
    assert run.status == "failed"
    assert message in StepRun.objects.get(run=run, name="call").error
    assert not Run.objects.filter(parent_step__run=run).exists()


def test_a_failed_child_fails_the_subflow_step(publish):
    publish({"name": "bad-child", "steps": {"boom": {"type": "shell", "run": "exit 2"}}})
    parent = publish(
        {"name": "p", "steps": {"call": {"type": "subflow", "with": {"workflow": "bad-child"}}}}
    )
    run = drive(start(parent))
    assert run.status == "failed"
    assert "sub-workflow 'bad-child' failed" in StepRun.objects.get(run=run, name="call").error


def test_a_recursive_definition_stops_at_the_depth_limit_with_a_clear_error(publish):
    workflow = publish(
        {
            "name": "forever",
            "steps": {"again": {"type": "subflow", "with": {"workflow": "forever"}}},
        }
    )
    run = drive(start(workflow), timeout=60)

    assert run.status == "failed"
    assert Run.objects.count() == services.MAX_SUBFLOW_DEPTH + 1
    deepest = Run.objects.get(depth=services.MAX_SUBFLOW_DEPTH)
    error = StepRun.objects.get(run=deepest).error
    assert "depth limit (10) exceeded" in error
    assert "recursive definition" in error
    assert "forever -> forever" in error


def test_cancelling_the_parent_cancels_the_child(publish):
    publish({"name": "slow-child", "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}}})
    parent = publish(
        {
            "name": "impatient",
            "steps": {"call": {"type": "subflow", "with": {"workflow": "slow-child"}}},
        }
    )
    run = start(parent)
    for _ in range(3):
        run_ready(run)
        tick()
        for child in Run.objects.filter(parent_step__run=run):
            run_ready(child)
    child = Run.objects.get(parent_step__run=run)
    assert StepRun.objects.get(run=child).status == "waiting"

    services.cancel_run(run, actor="user:alice", reason="changed my mind")

    child.refresh_from_db()
    run.refresh_from_db()
    assert run.status == child.status == "cancelled"
    assert StepRun.objects.get(run=child).status == "cancelled"
    assert tick(timezone.now() + timedelta(hours=2)) == 0  # the dropped timer never fires


def test_cancel_through_the_api_and_a_second_cancel_is_a_409(publish, api):
    workflow = publish(
        {"name": "long", "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}}}
    )
    run = start(workflow)
    run_ready(run)

    first = api.post(f"/api/v1/runs/{run.pk}/cancel", {"reason": "no"}, format="json")
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    second = api.post(f"/api/v1/runs/{run.pk}/cancel", {}, format="json")
    assert second.status_code == 409


# for_each


def test_for_each_runs_one_item_per_element_within_its_parallelism_in_order(publish):
    workflow = publish(
        {
            "name": "fan",
            "steps": {
                "each": {
                    "type": "noop",
                    "for_each": "{{ input.names }}",
                    "parallelism": 2,
                    "with": {"greeting": "hi {{ item }}"},
                },
                "after": {"type": "noop", "needs": ["each"], "with": {"n": "{{ parent.count }}"}},
            },
        }
    )
    run = start(workflow, {"names": ["a", "b", "c", "d", "e"]})
    run_ready(run)  # the step expands into items; two are ready

    items = StepRun.objects.filter(run=run, item_of__isnull=False).order_by("item_index")
    assert [i.name for i in items] == [f"each[{n}]" for n in range(5)]
    assert sorted(items.values_list("status", flat=True)) == ["pending"] * 3 + ["ready"] * 2

    run = drive(run)
    assert run.status == "succeeded", run.error
    assert output(run, "each")["results"] == [{"greeting": f"hi {n}"} for n in "abcde"]
    assert output(run, "after") == {"n": 5}


def test_for_each_over_several_arrays_takes_their_product(publish):
    workflow = publish(
        {
            "name": "matrix",
            "steps": {
                "build": {
                    "type": "noop",
                    "for_each": {"os": ["linux", "mac"], "py": ["3.11", "3.12"]},
                    "with": {"target": "{{ item.os }}-{{ item.py }}"},
                }
            },
        }
    )
    run = drive(start(workflow))
    assert [r["target"] for r in output(run, "build")["results"]] == [
        "linux-3.11",
        "linux-3.12",
        "mac-3.11",
        "mac-3.12",
    ]


@pytest.mark.parametrize(("policy", "run_status"), [("fail", "failed"), ("continue", "succeeded")])
def test_a_failed_item_fails_the_step_unless_the_policy_says_continue(publish, policy, run_status):
    workflow = publish(
        {
            "name": f"items-{policy}",
            "steps": {
                "each": {
                    "type": "shell",
                    "for_each": [1, 2, 3],
                    "parallelism": 3,
                    "on_item_failure": policy,
                    "run": 'test "$N" != 2',
                    "env": {"N": "{{ item }}"},
                }
            },
        }
    )
    run = drive(start(workflow))

    assert run.status == run_status
    step = StepRun.objects.get(run=run, name="each")
    assert step.output["errors"].keys() == {"1"}
    if policy == "fail":
        assert "1 of 3 items failed; item 1" in step.error


def test_for_each_over_an_empty_array_succeeds_with_no_results(publish):
    workflow = publish(
        {"name": "none", "steps": {"each": {"type": "noop", "for_each": [], "with": {}}}}
    )
    run = drive(start(workflow))
    assert run.status == "succeeded"
    assert output(run, "each")["results"] == []


def test_for_each_over_something_that_is_not_an_array_fails_clearly(publish):
    workflow = publish(
        {"name": "not-array", "steps": {"each": {"type": "noop", "for_each": "{{ input.x }}"}}}
    )
    run = drive(start(workflow, {"x": "abc"}))
    assert run.status == "failed"
    assert "must be an array, got str" in StepRun.objects.get(run=run, name="each").error


def test_item_outside_a_for_each_step_is_refused_at_publish_time(publish):
    with pytest.raises(DefinitionError) as excinfo:
        publish({"name": "no-item", "steps": {"a": {"type": "noop", "with": {"x": "{{ item }}"}}}})
    [problem] = excinfo.value.problems
    assert "only defined inside a step with for_each" in problem.message


# Secrets


SECRET = "hunter2-very-secret"


def test_a_secret_reaches_the_step_but_never_its_log_output_config_error_or_the_api(publish, api):
    from steps.secrets import set_secret

    set_secret("DB_PASSWORD", SECRET)
    workflow = publish(
        {
            "name": "uses-secret",
            "steps": {
                "connect": {
                    "type": "shell",
                    "run": 'echo "pw=$PW"; echo "OUTPUT: {\\"dsn\\": \\"db://u:$PW@h\\"}"; '
                    'echo "failed with $PW" >&2; exit 1',
                    "env": {"PW": "{{ secrets.DB_PASSWORD }}"},
                },
            },
        }
    )
    run = drive(start(workflow))

    step = StepRun.objects.get(run=run, name="connect")
    assert run.status == "failed"
    assert step.output == {"dsn": "db://u:***@h"}  # the step did see the real value
    assert "***" in json.dumps(step.config)
    responses = [
        api.get(f"/api/v1/runs/{run.pk}"),
        api.get(f"/api/v1/runs/{run.pk}/events"),
        api.get(f"/api/v1/runs/{run.pk}/logs"),
        api.get(f"/api/v1/runs/{run.pk}/logs", HTTP_ACCEPT="text/plain"),
        api.get("/api/v1/runs"),
    ]
    assert "pw=***" in responses[3].content.decode()
    for response in responses:
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
    rows = [json.dumps(e.data) for e in Event.objects.all()] + [step.error, run.error]
    assert all(SECRET not in row for row in rows)


def test_an_unknown_secret_fails_the_step_with_its_name(publish):
    workflow = publish(
        {"name": "no-secret", "steps": {"s": {"type": "noop", "with": {"x": "{{ secrets.NOPE }}"}}}}
    )
    run = drive(start(workflow))
    assert run.status == "failed"
    assert "unknown secret 'NOPE'" in StepRun.objects.get(run=run, name="s").error


# on_failure / on_success hooks


HOOKED = {
    "name": "hooked",
    "steps": {
        "deploy": {
            "type": "shell",
            "run": "exit {{ input.code }}",
            "hooks": {
                "on_failure": {
                    "message": "{{ step }} failed: {{ error }}",
                    "labels": {"team": "infra", "severity": "page"},
                    "run": ["rollback"],
                },
                "on_success": {"message": "{{ step }} is live", "run": ["announce"]},
            },
        },
        "rollback": {"type": "noop", "needs": ["deploy"]},
        "announce": {"type": "noop", "needs": ["deploy"]},
    },
}


@pytest.mark.parametrize(
    ("code", "fired", "ran", "skipped", "message"),
    [
        (1, "on_failure", "rollback", "announce", "deploy failed: exit code 1"),
        (0, "on_success", "announce", "rollback", "deploy is live"),
    ],
)
def test_a_hook_records_its_message_and_labels_and_runs_its_step(
    publish, code, fired, ran, skipped, message
):
    run = drive(start(publish(HOOKED), {"code": code}))

    assert statuses(run)[ran] == "succeeded"
    assert statuses(run)[skipped] == "skipped"
    hook = Event.objects.get(run=run, type="step.hook")
    assert hook.data["hook"] == fired
    assert hook.data["message"].startswith(message)
    assert hook.data["runs"] == [ran]
    if fired == "on_failure":
        assert hook.data["labels"] == {"team": "infra", "severity": "page"}
        assert run.status == "failed"  # the hook does not excuse the failure


def test_a_hook_naming_a_step_that_does_not_need_it_is_refused(publish):
    bad = {
        "name": "bad-hook",
        "steps": {
            "a": {"type": "noop", "hooks": {"on_failure": {"run": ["b", "c"]}}},
            "b": {"type": "noop"},
            "c": {"type": "noop", "needs": ["a"], "when": True},
        },
    }
    with pytest.raises(DefinitionError) as excinfo:
        publish(bad)
    assert [str(p) for p in excinfo.value.problems] == [
        "steps.a.hooks.on_failure.run[0]: 'b' must list 'a' in its needs",
        "steps.a.hooks.on_failure.run[1]: 'c' is run by a hook, which sets its when and join",
    ]


def test_lua_source_is_not_rendered_as_a_template(publish):
    workflow = publish(
        {
            "name": "nested-tables",
            "steps": {
                "s": {
                    "type": "script",
                    "with": {"lua": "local t = {{1, 2}, {3}}\nreturn {n = #t[1] + #t[2]}"},
                }
            },
        }
    )
    run = drive(start(workflow))
    assert run.status == "succeeded", run.error
    assert output(run, "s") == {"n": 3}
