"""The engine end to end in one process: services, the worker and the timers, with real processes
and real servers. Only the scheduling is the test's (tests/conftest.py, `run_to_end`)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import services
from runs.models import Event, LogLine, Run, StepRun
from runs.timers import tick
from steps.executors.base import StepResult
from steps.worker import execute_chain, run_attempt

pytestmark = pytest.mark.django_db


def step_of(run: Run, name: str) -> StepRun:
    return StepRun.objects.get(run=run, name=name)


def statuses(run: Run) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run).values_list("name", "status"))


def events_of(run: Run, step: str | None = None) -> list[Event]:
    events = Event.objects.filter(run=run).select_related("step_run").order_by("id")
    return list(events.filter(step_run__name=step) if step else events)


def event_types(run: Run, step: str | None = None) -> list[str]:
    return [event.type for event in events_of(run, step)]


# Failure and skipping


BRANCHES = {
    "name": "branches",
    "steps": {
        "broken": {"type": "shell", "run": "echo doomed >&2; exit 3"},
        "after": {"type": "noop", "needs": ["broken"]},
        "after_after": {"type": "noop", "needs": ["after"]},
        "independent": {"type": "shell", "run": "echo fine"},
        "independent_next": {"type": "noop", "needs": ["independent"]},
        "join": {"type": "noop", "needs": ["after_after", "independent_next"]},
    },
}


def test_a_failed_step_fails_the_run_and_skips_its_dependents_while_other_branches_run(
    publish, run_to_end
):
    started = time.monotonic()

    run = run_to_end(services.start_run(publish(BRANCHES), {}), timeout=10)

    assert time.monotonic() - started < 10
    assert run.status == "failed"
    assert run.error == "step 'broken' failed: exit code 3: doomed"
    assert statuses(run) == {
        "broken": "failed",
        "after": "skipped",
        "after_after": "skipped",
        "independent": "succeeded",
        "independent_next": "succeeded",
        "join": "skipped",
    }
    assert step_of(run, "broken").error == "exit code 3: doomed"
    assert run.output == {}
    types = event_types(run)
    assert types[-1] == "run.failed"
    assert types.count("run.failed") == 1
    skipped = [e.step_run.name for e in events_of(run) if e.type == "step.skipped"]
    assert sorted(skipped) == ["after", "after_after", "join"]
    assert StepRun.objects.filter(run=run, name="after", started_at__isnull=False).count() == 0


def test_on_failure_continue_lets_dependents_run_and_the_run_succeed(publish, run_to_end):
    workflow = publish(
        {
            "name": "tolerant",
            "steps": {
                "optional": {"type": "shell", "run": "exit 1", "on_failure": "continue"},
                "next": {"type": "noop", "needs": ["optional"]},
            },
        }
    )

    run = run_to_end(services.start_run(workflow, {}), timeout=10)

    assert run.status == "succeeded"
    assert run.error == ""
    assert statuses(run) == {"optional": "failed", "next": "succeeded"}
    assert step_of(run, "optional").error == "exit code 1"
    assert run.output == {"next": {}}
    assert event_types(run)[-1] == "run.succeeded"


@pytest.mark.parametrize(("deploy", "expected"), [(False, "skipped"), (True, "succeeded")])
def test_when_false_skips_the_step_and_its_dependents(publish, run_to_end, deploy, expected):
    workflow = publish(
        {
            "name": "gated",
            "input": {
                "type": "object",
                "properties": {"deploy": {"type": "boolean", "default": False}},
            },
            "steps": {
                "build": {"type": "noop"},
                "deploy": {"type": "noop", "needs": ["build"], "when": "{{ input.deploy }}"},
                "announce": {"type": "noop", "needs": ["deploy"]},
                "cleanup": {"type": "noop", "needs": ["build"]},
            },
        }
    )

    run = run_to_end(services.start_run(workflow, {"deploy": deploy}), timeout=10)

    assert run.status == "succeeded"
    assert statuses(run) == {
        "build": "succeeded",
        "deploy": expected,
        "announce": expected,
        "cleanup": "succeeded",
    }
    if not deploy:
        reasons = {
            event.step_run.name: event.data["reason"]
            for event in events_of(run)
            if event.type == "step.skipped"
        }
        assert reasons == {
            "deploy": "when is false",
            "announce": "'deploy' was skipped or not chosen",
        }
        assert run.output == {"cleanup": {}}


def test_a_shell_step_past_its_timeout_is_stopped_and_fails(publish, run_to_end):
    workflow = publish(
        {"name": "slow", "steps": {"sleepy": {"type": "shell", "run": "sleep 30", "timeout": 0.5}}}
    )
    started = time.monotonic()

    run = run_to_end(services.start_run(workflow, {}), timeout=10)

    assert time.monotonic() - started < 5
    assert run.status == "failed"
    step = step_of(run, "sleepy")
    assert step.status == "failed"
    assert step.error == "timed out after 0.5s"
    assert run.error == "step 'sleepy' failed: timed out after 0.5s"


# Retries


def counting_script(counter: Path, succeed_on: int) -> dict[str, Any]:
    """A shell step that counts its attempts in `counter` and fails until attempt `succeed_on`."""
    return {
        "type": "shell",
        "env": {"COUNTER": str(counter)},
        "run": (
            'n=$(( $(cat "$COUNTER" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$COUNTER"; '
            f'echo "attempt $n"; [ "$n" -ge {succeed_on} ]'
        ),
    }


def test_a_retried_step_recovers_on_attempt_3_and_waits_for_each_retry(
    publish, run_to_end, tmp_path
):
    counter = tmp_path / "attempts"
    step_def = {**counting_script(counter, 3), "retry": {"max_attempts": 3, "delay": 0.05}}
    workflow = publish({"name": "flaky", "steps": {"flaky": step_def}})
    run = services.start_run(workflow, {})
    flaky = step_of(run, "flaky")

    run_attempt(flaky.pk, 1)
    flaky.refresh_from_db()
    assert flaky.status == "retrying"
    assert flaky.next_attempt_at is not None
    # Not due yet: the timer pass leaves it alone.
    assert tick(flaky.next_attempt_at - timedelta(milliseconds=1)) == 0
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempt) == ("retrying", 1)

    run = run_to_end(run, timeout=10)

    assert run.status == "succeeded"
    flaky.refresh_from_db()
    assert flaky.status == "succeeded"
    assert flaky.attempt == 3
    assert counter.read_text().strip() == "3"
    events = events_of(run, "flaky")
    assert [(e.type, e.data.get("attempt")) for e in events] == [
        ("step.ready", 1),
        ("step.running", 1),
        ("step.retrying", 1),
        ("step.ready", 2),
        ("step.running", 2),
        ("step.retrying", 2),
        ("step.ready", 3),
        ("step.running", 3),
        ("step.succeeded", 3),
    ]
    for retrying, ready in ((events[2], events[3]), (events[5], events[6])):
        assert retrying.data["retry_in"] == 0.05
        assert retrying.data["error"] == "exit code 1"
        # next_attempt_at was honoured; the slack covers the instant between computing it
        # and writing the event.
        assert ready.created_at - retrying.created_at >= timedelta(seconds=0.04)
    logs = list(LogLine.objects.filter(run=run).order_by("id").values_list("attempt", "text"))
    assert logs == [(1, "attempt 1"), (2, "attempt 2"), (3, "attempt 3")]


def test_an_http_step_retries_a_500_and_keeps_the_successful_response(
    publish, run_to_end, httpserver
):
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_json(
        {"error": "busy"}, status=500
    )
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_json(
        {"ok": True, "id": 7}
    )
    workflow = publish(
        {
            "name": "notify",
            "steps": {
                "call": {
                    "type": "http",
                    "with": {
                        "url": httpserver.url_for("/hook"),
                        "method": "POST",
                        "json": {"run": "{{ run.id }}"},
                    },
                    "retry": {"max_attempts": 3, "delay": 0.01},
                }
            },
        }
    )

    run = run_to_end(services.start_run(workflow, {}), timeout=10)

    assert run.status == "succeeded"
    call = step_of(run, "call")
    assert call.attempt == 2
    assert set(call.output) == {"status", "body", "headers"}
    assert call.output["status"] == 200
    assert call.output["body"] == {"ok": True, "id": 7}
    assert call.output["headers"]["content-type"] == "application/json"
    assert run.output == {"call": call.output}
    httpserver.check_assertions()
    assert [request.get_json() for request, _ in httpserver.log] == [{"run": str(run.pk)}] * 2
    retrying = [e for e in events_of(run, "call") if e.type == "step.retrying"]
    assert len(retrying) == 1
    assert retrying[0].data["error"].startswith("HTTP 500 from POST ")


def test_an_http_step_that_keeps_failing_fails_with_the_status(publish, run_to_end, httpserver):
    httpserver.expect_request("/down").respond_with_data("overloaded", status=500)
    workflow = publish(
        {
            "name": "down",
            "steps": {
                "call": {
                    "type": "http",
                    "with": {"url": httpserver.url_for("/down")},
                    "retry": {"max_attempts": 2, "delay": 0.01},
                }
            },
        }
    )

    run = run_to_end(services.start_run(workflow, {}), timeout=10)

    assert run.status == "failed"
    call = step_of(run, "call")
    assert (call.status, call.attempt) == ("failed", 2)
    assert call.error.startswith("HTTP 500 from GET ")
    assert call.error.endswith(": overloaded")
    assert call.output["status"] == 500
    assert run.error.startswith("step 'call' failed: HTTP 500")
    assert len(httpserver.log) == 2


# Repeated and late messages


def test_a_duplicated_or_stale_delivery_does_not_run_the_step_twice(publish, tmp_path):
    ran = tmp_path / "ran"
    workflow = publish(
        {
            "name": "once",
            "steps": {
                "append": {
                    "type": "shell",
                    "env": {"FILE": str(ran)},
                    "run": 'echo ran >> "$FILE"',
                },
                "after": {"type": "noop", "needs": ["append"]},
            },
        }
    )
    run = services.start_run(workflow, {})
    append, after = step_of(run, "append"), step_of(run, "after")

    first = run_attempt(append.pk, 1, keep_one=True)
    duplicate = run_attempt(append.pk, 1, keep_one=True)
    stale = run_attempt(append.pk, 0, keep_one=True)
    ahead = run_attempt(append.pk, 2, keep_one=True)

    assert first == (after.pk, 1, "default")  # the successor's ticket names its queue
    assert duplicate is None
    assert stale is None
    assert ahead is None
    assert ran.read_text() == "ran\n"
    assert event_types(run, "append") == ["step.ready", "step.running", "step.succeeded"]
    append.refresh_from_db()
    assert (append.status, append.attempt) == ("succeeded", 1)

    assert run_attempt(*first[:2]) is None
    run.refresh_from_db()
    assert run.status == "succeeded"

    events_before = Event.objects.count()
    finished_at = step_of(run, "append").finished_at
    assert run_attempt(append.pk, 1) is None  # a late message after the step succeeded
    assert Event.objects.count() == events_before
    assert step_of(run, "append").finished_at == finished_at
    assert ran.read_text() == "ran\n"


def test_a_lost_lease_fails_the_attempt_and_the_late_finish_changes_nothing(publish, run_to_end):
    workflow = publish(
        {
            "name": "leased",
            "steps": {
                "work": {"type": "shell", "run": "echo done", "retry": {"max_attempts": 2}},
            },
        }
    )
    run = services.start_run(workflow, {})
    work = step_of(run, "work")
    claimed = services.claim(work.pk, 1, "doomed-worker")
    assert claimed is not None
    # Test setup only: the worker stopped answering long ago.
    StepRun.objects.filter(pk=work.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert tick() == 1

    work.refresh_from_db()
    assert work.status == "retrying"
    assert work.attempt == 1
    assert work.lease_expires_at is None
    assert work.error == "attempt 1 lost: worker doomed-worker stopped answering"
    lost = events_of(run, "work")[-1]
    assert (lost.type, lost.actor, lost.data["attempt"]) == ("step.retrying", "sweeper", 1)

    assert services.finish(claimed.step, 1, StepResult.success({"late": True})) is None
    work.refresh_from_db()
    assert (work.status, work.output) == ("retrying", None)

    run = run_to_end(run, timeout=10)

    assert run.status == "succeeded"
    work.refresh_from_db()
    assert (work.status, work.attempt, work.output) == ("succeeded", 2, {})
    events_before = Event.objects.count()
    assert services.finish(claimed.step, 1, StepResult.failure("late")) is None
    assert Event.objects.count() == events_before
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_a_lost_lease_without_retries_fails_the_run(publish, run_to_end):
    workflow = publish({"name": "fragile", "steps": {"work": {"type": "noop"}}})
    run = services.start_run(workflow, {})
    work = step_of(run, "work")
    assert services.claim(work.pk, 1, "doomed-worker") is not None
    StepRun.objects.filter(pk=work.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    tick()

    run.refresh_from_db()
    assert run.status == "failed"
    assert "attempt 1 lost" in run.error
    assert step_of(run, "work").status == "failed"


# Cost of the hot path


def noop_chain(length: int) -> dict[str, Any]:
    steps: dict[str, Any] = {"s0": {"type": "noop"}}
    steps.update({f"s{i}": {"type": "noop", "needs": [f"s{i - 1}"]} for i in range(1, length)})
    return {"name": f"chain-{length}", "steps": steps}


def test_a_noop_step_costs_a_bounded_number_of_sql_statements(publish):
    run = services.start_run(publish(noop_chain(10)), {})
    first = step_of(run, "s0")

    # What the Django-Q2 task does: one message runs the whole chain inline.
    with CaptureQueriesContext(connection) as ctx:
        ran = execute_chain(first.pk, 1)

    assert ran == 10
    run.refresh_from_db()
    assert run.status == "succeeded"
    statements = [q["sql"] for q in ctx.captured_queries]
    # In a test, each atomic() is a SAVEPOINT and a RELEASE; in production, BEGIN and COMMIT.
    work = [sql for sql in statements if "SAVEPOINT" not in sql]
    print(f"SQL per noop step: {len(statements) / 10:g} ({len(work) / 10:g} without savepoints)")
    # Measured on SQLite: 14 statements per step, 10 without savepoints (claim: select, update,
    # event; context: outputs of its needs; finish: lock run, update, event, read states,
    # ready the successor, its event). A small margin, so a new query per step fails here.
    assert len(work) <= 10 * 10 + 3
    assert len(statements) <= 10 * 14 + 3


# Django-Q2 in-process


@pytest.fixture
def q_sync():
    from django_q.conf import Conf

    saved = Conf.SYNC
    Conf.SYNC = True
    yield
    Conf.SYNC = saved


@pytest.mark.django_db(transaction=True)
def test_with_django_q2_in_sync_mode_a_run_completes_when_its_start_commits(
    q_sync, publish, tmp_path
):
    from django_q.models import Failure

    workflow = publish(
        {
            "name": "fanout",
            "steps": {
                "start": {"type": "shell", "run": 'echo "OUTPUT: {\\"n\\": 1}"'},
                "left": {"type": "noop", "needs": ["start"]},
                "right": {"type": "noop", "needs": ["start"]},
                "join": {
                    "type": "noop",
                    "needs": ["left", "right"],
                    "with": {"n": "{{ steps.start.output.n }}"},
                },
            },
        }
    )

    run = services.start_run(workflow, {})

    run.refresh_from_db()
    assert run.status == "succeeded", (run.error, list(Failure.objects.values("result")))
    assert set(statuses(run).values()) == {"succeeded"}
    assert run.output == {"join": {"n": 1}}
    assert not Failure.objects.exists()
