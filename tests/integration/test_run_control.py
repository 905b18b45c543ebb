"""Run control through the API and the services: idempotent starts, queueing and priority,
parallelism limits, pause and resume, rerun, dead letters and deadlines."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from runs import services
from runs.models import DeadLetter, Event, Run, StepRun
from runs.timers import tick
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db


def run_ready() -> int:
    ready = list(StepRun.objects.filter(status="ready").values_list("pk", "attempt"))
    for pk, attempt in ready:
        run_attempt(pk, attempt)
    return len(ready)


def statuses(run: Run) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run, item_of__isnull=True).values_list("name", "status"))


# Idempotency


def test_the_same_idempotency_key_returns_the_same_run(publish, api):
    publish({"name": "idem", "steps": {"a": {"type": "noop"}}})
    url = "/api/v1/workflows/idem/runs"
    first = api.post(url, {"input": {"x": 1}, "idempotency_key": "order-42"}, format="json")
    second = api.post(url, {"input": {"x": 1}, "idempotency_key": "order-42"}, format="json")
    header = api.post(url, {"input": {"x": 1}}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")

    assert (first.status_code, second.status_code, header.status_code) == (201, 200, 200)
    assert first.json()["id"] == second.json()["id"] == header.json()["id"]
    assert Run.objects.count() == 1

    other = api.post(url, {"input": {"x": 2}, "idempotency_key": "order-42"}, format="json")
    assert other.status_code == 409
    assert "different input" in other.json()["message"]
    assert api.post(url, {"idempotency_key": ""}, format="json").status_code == 400


# Queueing, priority and parallelism


def test_max_runs_queues_the_rest_and_the_highest_priority_starts_next(publish):
    workflow = publish(
        {
            "name": "one-at-a-time",
            "concurrency": {"max_runs": 1},
            "steps": {"wait": {"type": "approval"}},
        }
    )
    first = services.start_run(workflow, {})
    low = services.start_run(workflow, {}, priority=2)
    high = services.start_run(workflow, {}, priority=9)
    normal = services.start_run(workflow, {})
    for run in (first, low, high, normal):
        run.refresh_from_db()
    assert [first.status, low.status, high.status, normal.status] == [
        "running",
        "queued",
        "queued",
        "queued",
    ]

    services.cancel_run(first)
    services.admit_queued(workflow.pk)  # what the commit hook of the cancel does
    high.refresh_from_db()
    normal.refresh_from_db()
    assert high.status == "running"
    assert normal.status == "queued"


def test_max_parallel_steps_caps_what_is_ready_or_running_in_a_run(publish):
    steps = {f"s{i}": {"type": "noop"} for i in range(6)}
    workflow = publish({"name": "narrow", "concurrency": {"max_parallel_steps": 2}, "steps": steps})
    run = services.start_run(workflow, {})
    peak = 0
    for _ in range(20):
        active = StepRun.objects.filter(run=run, status__in=["ready", "running"]).count()
        peak = max(peak, active)
        if not run_ready():
            break
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert peak == 2


# Pause and resume


def test_a_paused_run_starts_nothing_new_and_resumes_where_it_was(publish, api):
    workflow = publish(
        {
            "name": "pausable",
            "steps": {"a": {"type": "noop"}, "b": {"type": "noop", "needs": ["a"]}},
        }
    )
    run = services.start_run(workflow, {})
    assert api.post(f"/api/v1/runs/{run.pk}/pause").json()["status"] == "paused"
    run_ready()  # the worker gets a, but may not start it
    assert statuses(run) == {"a": "ready", "b": "pending"}
    assert api.post(f"/api/v1/runs/{run.pk}/pause").status_code == 409

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume")
    assert resumed.json()["status"] == "running"
    run = drive(run)
    assert run.status == "succeeded"
    types = list(Event.objects.filter(run=run).values_list("type", flat=True))
    assert "run.paused" in types
    assert "run.resumed" in types


def test_a_step_that_ends_while_its_run_is_paused_readies_nothing(publish):
    workflow = publish(
        {
            "name": "pause-mid",
            "steps": {"a": {"type": "noop"}, "b": {"type": "noop", "needs": ["a"]}},
        }
    )
    run = services.start_run(workflow, {})
    a = StepRun.objects.get(run=run, name="a")
    claimed = services.claim(a.pk, a.attempt, "w")
    services.pause_run(run)
    services.finish(claimed.step, a.attempt, services.StepResult.success({}))
    assert statuses(run) == {"a": "succeeded", "b": "pending"}
    services.resume_run(run)
    assert statuses(run)["b"] == "ready"


def test_a_paused_workflow_queues_new_runs_until_it_resumes(publish, api):
    workflow = publish({"name": "held", "steps": {"a": {"type": "noop"}}})
    assert api.post("/api/v1/workflows/held/pause").json() == {"name": "held", "paused": True}
    started = api.post("/api/v1/workflows/held/runs", {}, format="json").json()
    assert started["status"] == "queued"
    assert api.post("/api/v1/workflows/held/pause").status_code == 409

    api.post("/api/v1/workflows/held/resume")
    run = drive(Run.objects.get(pk=started["id"]))
    assert run.status == "succeeded"
    assert workflow.events.filter(type="workflow.paused").exists()


# Rerun


def counting_workflow(publish, tmp_path: Path) -> Any:
    """b fails until the file `ok` exists; every step appends its name to `ran`."""
    log = tmp_path / "ran"

    def shell(name: str, extra: str = "") -> dict[str, Any]:
        return {
            "type": "shell",
            "run": f"echo {name} >> {log}; {extra}",
            "env": {"N": "{{ input.n }}"},
        }

    return publish(
        {
            "name": "rerunnable",
            "input": {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}},
            "steps": {
                "a": shell("a", 'echo "OUTPUT: {\\"n\\": $N}"'),
                "b": {**shell("b", f"test -e {tmp_path / 'ok'}"), "needs": ["a"]},
                "c": {**shell("c"), "needs": ["b"]},
            },
        }
    ), log


def test_rerun_retries_the_failed_steps_and_keeps_what_succeeded(publish, api, tmp_path):
    workflow, log = counting_workflow(publish, tmp_path)
    first = drive(services.start_run(workflow, {}))
    assert statuses(first) == {"a": "succeeded", "b": "failed", "c": "skipped"}
    (tmp_path / "ok").touch()

    response = api.post(f"/api/v1/runs/{first.pk}/rerun", {}, format="json")
    assert response.status_code == 201, response.content
    second = drive(Run.objects.get(pk=response.json()["id"]))

    assert second.status == "succeeded"
    assert second.rerun_of_id == first.pk
    assert log.read_text().split() == ["a", "b", "b", "c"]  # a was not run again
    assert StepRun.objects.get(run=second, name="a").output == {"n": 1}
    first.refresh_from_db()
    assert first.status == "failed"  # history is not rewritten
    assert Event.objects.filter(run=first, type="run.rerun").exists()


def test_rerun_from_a_step_with_edited_input_and_replay_of_one_step(publish, api, tmp_path):
    workflow, log = counting_workflow(publish, tmp_path)
    (tmp_path / "ok").touch()
    first = drive(services.start_run(workflow, {}))
    log.write_text("")

    from_b = api.post(
        f"/api/v1/runs/{first.pk}/rerun", {"from_step": "b", "input": {"n": 5}}, format="json"
    )
    drive(Run.objects.get(pk=from_b.json()["id"]))
    assert log.read_text().split() == ["b", "c"]
    log.write_text("")

    only_a = api.post(
        f"/api/v1/runs/{first.pk}/rerun", {"only_step": "a", "input": {"n": 7}}, format="json"
    )
    replay = drive(Run.objects.get(pk=only_a.json()["id"]))
    assert log.read_text().split() == ["a"]
    assert StepRun.objects.get(run=replay, name="a").output == {"n": 7}

    assert (
        api.post(f"/api/v1/runs/{first.pk}/rerun", {"from_step": "zz"}, format="json").status_code
        == 409
    )
    assert (
        api.post(f"/api/v1/runs/{first.pk}/rerun", {"input": {"n": "x"}}, format="json").status_code
        == 400
    )


def test_a_running_run_cannot_be_rerun(publish, api):
    workflow = publish({"name": "busy", "steps": {"a": {"type": "approval"}}})
    run = services.start_run(workflow, {})
    assert api.post(f"/api/v1/runs/{run.pk}/rerun", {}, format="json").status_code == 409


# Dead letters


def test_a_step_that_exhausts_its_retries_is_dead_lettered_and_can_be_requeued(
    publish, api, tmp_path
):
    flag = tmp_path / "fixed"
    workflow = publish(
        {
            "name": "dlq",
            "defaults": {"dead_letter": True},
            "steps": {
                "charge": {"type": "shell", "run": f"test -e {flag}", "retry": {"max_attempts": 2}},
                "receipt": {"type": "noop", "needs": ["charge"]},
            },
        }
    )
    run = drive(services.start_run(workflow, {}))
    assert run.status == "failed"

    listed = api.get("/api/v1/dead-letters", {"status": "open"}).json()["results"]
    assert [(d["workflow"], d["step"], d["attempts"]) for d in listed] == [("dlq", "charge", 2)]
    letter = api.get(f"/api/v1/dead-letters/{listed[0]['id']}").json()
    assert "exit code 1" in letter["error"]
    assert letter["config"]["run"].startswith("test -e")

    flag.touch()
    requeued = api.post(f"/api/v1/dead-letters/{letter['id']}/requeue")
    assert requeued.status_code == 200
    assert requeued.json()["status"] == "requeued"
    run = drive(run)
    assert run.status == "succeeded"
    assert statuses(run) == {"charge": "succeeded", "receipt": "succeeded"}
    assert api.post(f"/api/v1/dead-letters/{letter['id']}/requeue").status_code == 409
    assert api.post(f"/api/v1/dead-letters/{letter['id']}/discard").status_code == 409


def test_a_dead_letter_can_be_discarded(publish, api):
    workflow = publish(
        {"name": "dlq2", "steps": {"x": {"type": "shell", "run": "exit 1", "dead_letter": True}}}
    )
    drive(services.start_run(workflow, {}))
    letter = DeadLetter.objects.get()
    assert api.post(f"/api/v1/dead-letters/{letter.pk}/discard").json()["status"] == "discarded"
    assert api.get("/api/v1/dead-letters", {"status": "bogus"}).status_code == 400


def test_steps_without_the_policy_are_not_dead_lettered(publish):
    workflow = publish({"name": "plain-fail", "steps": {"x": {"type": "shell", "run": "exit 1"}}})
    drive(services.start_run(workflow, {}))
    assert not DeadLetter.objects.exists()


# Deadlines


def test_a_run_past_its_deadline_fails_and_its_open_steps_are_cancelled(publish):
    workflow = publish(
        {
            "name": "deadline",
            "deadline": "1h",
            "steps": {"wait": {"type": "delay", "with": {"for": "2h"}}},
        }
    )
    run = services.start_run(workflow, {})
    run_ready()
    tick(timezone.now() + timedelta(minutes=59))
    run.refresh_from_db()
    assert run.status == "running"

    tick(timezone.now() + timedelta(hours=1, seconds=1))
    run.refresh_from_db()
    assert run.status == "failed"
    assert "deadline" in run.error
    assert statuses(run) == {"wait": "cancelled"}


def test_replaying_one_step_keeps_every_other_outcome_even_failures(publish, api, tmp_path):
    workflow, log = counting_workflow(publish, tmp_path)
    first = drive(services.start_run(workflow, {}))
    assert statuses(first) == {"a": "succeeded", "b": "failed", "c": "skipped"}
    log.write_text("")

    replay = api.post(f"/api/v1/runs/{first.pk}/rerun", {"only_step": "a"}, format="json")
    run = drive(Run.objects.get(pk=replay.json()["id"]))

    assert log.read_text().split() == ["a"]
    assert statuses(run) == {"a": "succeeded", "b": "failed", "c": "skipped"}
    assert run.status == "failed"


def test_a_paused_workflow_loaded_before_the_pause_still_queues_new_runs(publish):
    workflow = publish({"name": "stale", "steps": {"a": {"type": "noop"}}})
    stale = type(workflow).objects.get(pk=workflow.pk)
    services.pause_workflow(workflow)
    run = services.start_run(stale, {})
    assert run.status == "queued"


def test_requeue_refuses_while_the_workflow_has_no_room(publish, api):
    workflow = publish(
        {"name": "full", "steps": {"x": {"type": "shell", "run": "exit 1", "dead_letter": True}}}
    )
    drive(services.start_run(workflow, {}))
    services.pause_workflow(workflow)
    letter = DeadLetter.objects.get()
    response = api.post(f"/api/v1/dead-letters/{letter.pk}/requeue")
    assert response.status_code == 409
    assert "paused" in response.json()["message"]
    letter.refresh_from_db()
    assert letter.status == "open"
