"""Rebuilding runs from their event logs (runs/verify.py, `manage.py verify_run`).

Real workflows run through the worker and tick code (tests.conftest.drive); afterwards, and at
points in between, every run and its child runs must replay to exactly their rows. Tampering
with a row must show. The tests marked xfail are gaps found this way: they fail today and pass
once services.py writes the missing events (or stops the stray writes); flip them then.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from runs import services
from runs.models import Event, Run, StepRun
from runs.timers import tick
from runs.verify import check_run, verify_all, verify_run
from steps.executors.base import StepResult, Wait
from steps.worker import run_attempt
from tests.conftest import drive
from tests.verify_helpers import assert_verified, family

pytestmark = pytest.mark.django_db


def start(workflow: Any, data: Any = None) -> Run:
    return services.start_run(workflow, data or {})


def run_ready(run: Run) -> int:
    ready = list(StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt"))
    for pk, attempt in ready:
        run_attempt(pk, attempt)
    return len(ready)


def statuses(run: Run) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run).values_list("name", "status"))


def command(*args: Any) -> str:
    out = io.StringIO()
    call_command("verify_run", *args, stdout=out)
    return out.getvalue()


def failing_command(*args: Any) -> tuple[str, CommandError]:
    out = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_run", *args, stdout=out)
    return out.getvalue(), excinfo.value


CHAIN = {
    "name": "chain",
    "steps": {
        "a": {"type": "noop"},
        "b": {"type": "shell", "run": "echo b", "needs": ["a"]},
        "c": {"type": "noop", "needs": ["b"]},
    },
}


# Scenarios that must replay to their rows


def test_a_chain_agrees_with_its_events_at_every_step(publish):
    run = start(publish(CHAIN))
    assert verify_run(run) == []

    while run_ready(run):
        assert verify_run(run) == []

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert verify_run(run) == []


def test_a_failure_and_the_steps_it_skips_agree(publish):
    workflow = publish(
        {
            "name": "failing",
            "steps": {
                "broken": {"type": "shell", "run": "exit 3"},
                "dependent": {"type": "noop", "needs": ["broken"]},
                "after": {"type": "noop", "needs": ["dependent"]},
                "independent": {"type": "shell", "run": "echo fine"},
            },
        }
    )
    run = drive(start(workflow))

    assert run.status == "failed"
    assert statuses(run)["after"] == "skipped"
    assert_verified(run)


def test_a_step_that_fails_twice_then_succeeds_agrees_at_attempt_3(publish, tmp_path: Path):
    counter = tmp_path / "attempts"
    flaky = {
        "type": "shell",
        "env": {"COUNTER": str(counter)},
        "run": 'n=$(( $(cat "$COUNTER" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$COUNTER"; '
        '[ "$n" -ge 3 ]',
        "retry": {"max_attempts": 3, "delay": 0.05},
    }
    run = start(publish({"name": "flaky", "steps": {"flaky": flaky}}))
    run_ready(run)
    assert statuses(run) == {"flaky": "retrying"}
    assert verify_run(run) == []

    run = drive(run, timeout=10)

    step = StepRun.objects.get(run=run, name="flaky")
    assert (run.status, step.status, step.attempt) == ("succeeded", "succeeded", 3)
    assert verify_run(run) == []


def test_a_rate_limited_attempt_deferred_and_run_again_agrees(publish, settings):
    # Two shell steps at once, one token: the second is deferred 0.05 s (step.deferred).
    settings.FURROW = {**settings.FURROW, "RATE_LIMITS": {"shell": {"rate": 20, "burst": 1}}}
    workflow = publish(
        {
            "name": "limited",
            "steps": {
                "one": {"type": "shell", "run": "true"},
                "two": {"type": "shell", "run": "true"},
            },
        }
    )
    run = drive(start(workflow), timeout=10)

    assert run.status == "succeeded"
    assert Event.objects.filter(run=run, type="step.deferred").exists()
    assert verify_run(run) == []


def test_a_lost_lease_recorded_by_the_sweeper_agrees(publish):
    workflow = publish({"name": "lost", "steps": {"work": {"type": "shell", "run": "true"}}})
    run = start(workflow)
    work = StepRun.objects.get(run=run)
    assert services.claim(work.pk, 1, "vanished-worker") is not None

    tick(timezone.now() + timedelta(hours=2))

    run.refresh_from_db()
    assert (run.status, statuses(run)) == ("failed", {"work": "failed"})
    assert verify_run(run) == []


def test_a_false_when_guard_skips_the_step_and_its_dependents_in_agreement(publish):
    workflow = publish(
        {
            "name": "guarded",
            "steps": {
                "deploy": {"type": "noop", "when": "{{ input.deploy }}"},
                "announce": {"type": "noop", "needs": ["deploy"]},
            },
        }
    )
    run = drive(start(workflow, {"deploy": False}))

    assert statuses(run) == {"deploy": "skipped", "announce": "skipped"}
    assert verify_run(run) == []


BRANCHING = {
    "name": "branching",
    "steps": {
        "check": {
            "type": "condition",
            "with": {
                "value": "{{ input.env }}",
                "equals": "prod",
                "then": ["deploy"],
                "else": ["preview"],
            },
        },
        "deploy": {"type": "noop", "needs": ["check"]},
        "preview": {"type": "noop", "needs": ["check"]},
        "announce": {"type": "noop", "needs": ["deploy", "preview"], "join": "any_succeeded"},
        "strict": {"type": "noop", "needs": ["deploy", "preview"]},
    },
}


@pytest.mark.parametrize(("env", "skipped"), [("prod", "preview"), ("dev", "deploy")])
def test_a_condition_branch_and_its_joins_agree(publish, env, skipped):
    run = drive(start(publish(BRANCHING), {"env": env}))

    assert run.status == "succeeded"
    assert statuses(run)[skipped] == statuses(run)["strict"] == "skipped"
    assert verify_run(run) == []


def fan_out(publish: Any, *, policy: str = "fail", failing: int | None = None) -> Run:
    """A for_each over five items, two at a time; item `failing` exits 1."""
    workflow = publish(
        {
            "name": f"fan-{policy}-{failing}",
            "steps": {
                "each": {
                    "type": "shell",
                    "for_each": [0, 1, 2, 3, 4],
                    "parallelism": 2,
                    "on_item_failure": policy,
                    "run": 'test "$N" != "$FAILING"',
                    "env": {"N": "{{ item }}", "FAILING": str(failing)},
                },
                "after": {"type": "noop", "needs": ["each"], "join": "all_done"},
            },
        }
    )
    return start(workflow)


def test_for_each_items_agree_while_they_run_and_after(publish):
    run = fan_out(publish)
    run_ready(run)  # the step expands into five items; two are ready
    assert sorted(statuses(run).values()) == ["pending"] * 4 + ["ready"] * 2 + ["waiting"]
    assert verify_run(run) == []

    run = drive(run)

    assert run.status == "succeeded"
    assert verify_run(run) == []


def test_a_failed_item_under_continue_agrees(publish):
    run = drive(fan_out(publish, policy="continue", failing=0))

    assert run.status == "succeeded"
    assert statuses(run)["each[0]"] == "failed"
    assert verify_run(run) == []


def test_items_skipped_by_fail_fast_agree(publish):
    run = drive(fan_out(publish, policy="fail", failing=0))

    assert run.status == "failed"
    assert "skipped" in statuses(run).values()
    assert verify_run(run) == []


def test_a_delay_woken_by_the_timer_agrees(publish):
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
    assert verify_run(run) == []

    tick(timezone.now() + timedelta(hours=1, seconds=1))
    run = drive(run)

    assert run.status == "succeeded"
    assert verify_run(run) == []


def test_http_async_and_its_callback_agree(publish, httpserver, client):
    httpserver.expect_request("/jobs", method="POST").respond_with_json({"accepted": True})
    workflow = publish(
        {
            "name": "async",
            "steps": {
                "job": {"type": "http_async", "with": {"url": httpserver.url_for("/jobs")}},
                "after": {"type": "noop", "needs": ["job"]},
            },
        }
    )
    run = start(workflow)
    run_ready(run)
    assert statuses(run)["job"] == "waiting"
    assert verify_run(run) == []

    token = httpserver.log[-1][0].get_json()["callback_url"].rsplit("/", 1)[1]
    response = client.post(
        f"/api/v1/callbacks/{token}", {"output": {"answer": 42}}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    run = drive(run)

    assert run.status == "succeeded"
    assert Event.objects.filter(run=run, type="step.callback").count() == 1
    assert verify_run(run) == []


CHILD = {
    "name": "child",
    "input": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "steps": {"double": {"type": "noop", "with": {"value": "{{ input.n * 2 }}"}}},
}


def test_a_subflow_and_its_child_run_agree(publish):
    publish(CHILD)
    parent = publish(
        {
            "name": "parent",
            "steps": {
                "call": {"type": "subflow", "with": {"workflow": "child", "input": {"n": 21}}},
                "use": {"type": "noop", "needs": ["call"]},
            },
        }
    )
    run = drive(start(parent))

    assert run.status == "succeeded"
    runs = family(run)
    assert [r.depth for r in runs] == [0, 1]
    assert verify_all(runs) == {r.pk: [] for r in runs}


def test_a_cancelled_run_agrees(publish):
    workflow = publish(
        {
            "name": "long",
            "steps": {
                "wait": {"type": "delay", "with": {"for": "1h"}},
                "after": {"type": "noop", "needs": ["wait"]},
                "side": {"type": "noop"},
            },
        }
    )
    run = start(workflow)
    run_ready(run)

    services.cancel_run(run, actor="user:alice", reason="no longer needed")

    assert statuses(run) == {"wait": "cancelled", "after": "cancelled", "side": "succeeded"}
    assert verify_run(run) == []


def test_cancelling_a_parent_cancels_its_child_in_agreement(publish):
    publish({"name": "slow-child", "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}}})
    parent = publish(
        {
            "name": "impatient",
            "steps": {"call": {"type": "subflow", "with": {"workflow": "slow-child"}}},
        }
    )
    run = start(parent)
    run_ready(run)
    child = Run.objects.get(parent_step__run=run)
    run_ready(child)
    assert statuses(child) == {"wait": "waiting"}
    assert_verified(run)

    services.cancel_run(run)

    child.refresh_from_db()
    assert child.status == "cancelled"
    assert_verified(run)


def test_a_cancelled_for_each_agrees_including_its_items(publish):
    run = fan_out(publish)
    run_ready(run)

    services.cancel_run(run)

    assert set(statuses(run).values()) == {"cancelled"}
    assert verify_run(run) == []


def test_an_approval_step_decided_by_an_approver_agrees(publish, bob):
    workflow = publish(
        {
            "name": "approved",
            "steps": {
                "gate": {"type": "approval", "with": {"approvers": {"users": ["bob"]}}},
                "deploy": {"type": "noop", "needs": ["gate"]},
            },
        }
    )
    run = start(workflow)
    run_ready(run)
    assert statuses(run)["gate"] == "waiting"
    assert verify_run(run) == []

    services.decide(run, "gate", "approve", user=bob)
    run = drive(run)

    assert run.status == "succeeded"
    assert verify_run(run) == []


def test_an_approved_gate_runs_its_step_at_the_next_attempt_in_agreement(publish, bob):
    gated = {
        "type": "shell",
        "run": "echo deploying",
        "requires_approval": {"approvers": {"users": ["bob"]}},
    }
    run = start(publish({"name": "gated", "steps": {"deploy": gated}}))
    run_ready(run)
    assert verify_run(run) == []

    services.decide(run, "deploy", "approve", user=bob)
    run = drive(run)

    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run).attempt == 2
    assert verify_run(run) == []


def test_an_approval_nobody_decided_in_time_agrees(publish):
    workflow = publish(
        {"name": "unanswered", "steps": {"gate": {"type": "approval", "timeout": "1h"}}}
    )
    run = start(workflow)
    run_ready(run)

    tick(timezone.now() + timedelta(hours=1, seconds=1))

    run.refresh_from_db()
    assert (run.status, statuses(run)) == ("failed", {"gate": "failed"})
    assert verify_run(run) == []


def test_a_paused_and_resumed_run_agrees(publish):
    run = start(publish(CHAIN))
    services.pause_run(run)
    assert verify_run(run) == []
    run_ready(run)
    assert verify_run(run) == []

    services.resume_run(run)
    assert verify_run(run) == []
    run = drive(run)

    assert run.status == "succeeded"
    assert verify_run(run) == []


def test_a_run_queued_behind_max_runs_agrees_before_and_after_it_starts(publish):
    workflow = publish({**CHAIN, "name": "one-at-a-time", "concurrency": {"max_runs": 1}})
    first, second = start(workflow), start(workflow)
    second.refresh_from_db()
    assert second.status == "queued"
    assert verify_run(second) == []

    drive(first)
    services.admit_queued(workflow.pk)
    second = drive(second)

    assert second.status == "succeeded"
    assert verify_all([first, second]) == {first.pk: [], second.pk: []}


def test_a_run_past_its_deadline_agrees(publish):
    workflow = publish(
        {
            "name": "hurried",
            "deadline": "1m",
            "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}},
        }
    )
    run = start(workflow)
    run_ready(run)

    assert services.expire_run(run.pk, timezone.now() + timedelta(minutes=2))

    run.refresh_from_db()
    assert (run.status, statuses(run)) == ("failed", {"wait": "cancelled"})
    assert verify_run(run) == []


# Rows changed behind the services' back


def test_a_step_row_changed_directly_is_reported(publish):
    run = drive(start(publish(CHAIN)))
    StepRun.objects.filter(run=run, name="b").update(status="failed")

    assert verify_run(run) == [
        "step 'b': events say succeeded (attempt 1), row says failed (attempt 1)"
    ]


def test_a_run_row_and_an_attempt_changed_directly_are_reported(publish):
    run = drive(start(publish(CHAIN)))
    Run.objects.filter(pk=run.pk).update(status="running")
    StepRun.objects.filter(run=run, name="c").update(attempt=4)

    # `run` still says succeeded in memory: the check reads the rows afresh.
    assert verify_run(run) == [
        "run: events say succeeded, row says running",
        "step 'c': events say succeeded (attempt 1), row says succeeded (attempt 4)",
    ]


def test_a_row_no_event_created_and_a_row_removed_are_reported(publish):
    run = drive(start(publish(CHAIN)))
    a = StepRun.objects.get(run=run, name="a")
    StepRun.objects.create(run=run, name="a[0]", type="noop", position=0, item_of=a, item_index=0)
    Event.objects.filter(step_run__run=run, step_run__name="c").update(step_run=None)
    StepRun.objects.filter(run=run, name="c").delete()

    assert verify_run(run) == [
        "step 'c': events say pending (attempt 0), but there is no row",
        "step 'a[0]': row says pending (attempt 0), but neither the definition nor an event "
        "created it",
    ]


# The command


def test_the_command_prints_ok_for_each_run_that_agrees(publish):
    first, second = drive(start(publish(CHAIN))), drive(start(publish(CHAIN)))

    assert command(str(first.pk), str(second.pk)) == f"ok {first.pk}\nok {second.pk}\n"


def test_the_command_prints_the_differences_and_exits_1(publish):
    good, bad = drive(start(publish(CHAIN))), drive(start(publish(CHAIN)))
    StepRun.objects.filter(run=bad, name="b").update(status="failed")

    output, error = failing_command(str(good.pk), str(bad.pk))

    assert output == (
        f"ok {good.pk}\n"
        f"differs {bad.pk}\n"
        "  step 'b': events say succeeded (attempt 1), row says failed (attempt 1)\n"
    )
    assert error.returncode == 1
    assert str(error) == "1 of 2 runs differ from their event logs"


def test_the_command_prints_json_and_still_exits_1_on_a_difference(publish):
    good, bad = drive(start(publish(CHAIN))), drive(start(publish(CHAIN)))
    Run.objects.filter(pk=bad.pk).update(status="failed")

    output, error = failing_command(str(good.pk), str(bad.pk), "--json")

    assert json.loads(output) == {
        "ok": False,
        "runs": {
            str(good.pk): {"ok": True, "differences": [], "unknown_types": []},
            str(bad.pk): {
                "ok": False,
                "differences": ["run: events say succeeded, row says failed"],
                "unknown_types": [],
            },
        },
    }
    assert error.returncode == 1


def test_all_checks_every_run_including_child_runs(publish):
    publish(CHILD)
    parent = publish(
        {
            "name": "parent",
            "steps": {
                "call": {"type": "subflow", "with": {"workflow": "child", "input": {"n": 1}}}
            },
        }
    )
    run = drive(start(parent))
    child = Run.objects.get(parent_step__run=run)

    data = json.loads(command("--all", "--json"))

    assert data == {
        "ok": True,
        "runs": {
            str(r.pk): {"ok": True, "differences": [], "unknown_types": []} for r in (run, child)
        },
    }


def test_recent_checks_the_newest_runs_only(publish):
    workflow = publish(CHAIN)
    drive(start(workflow))
    newest = drive(start(workflow))

    assert command("--recent", "1") == f"ok {newest.pk}\n"


def test_unknown_event_types_are_noted_but_are_no_difference(publish):
    run = drive(start(publish(CHAIN)))
    Event.objects.create(
        run=run, step_run=StepRun.objects.get(run=run, name="a"), type="step.noted"
    )

    assert check_run(run).unknown_types == {"step.noted"}
    assert command(str(run.pk)) == f"ok {run.pk}\n  note: unknown event types ignored: step.noted\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give run ids, --all or --recent N (exactly one of them)"),
        (("--all", "--recent", "2"), "give run ids, --all or --recent N (exactly one of them)"),
        (("--recent", "0"), "--recent must be at least 1"),
        (("nope",), "'nope' is not a run id (a UUID)"),
        (
            ("00000000-0000-0000-0000-000000000000",),
            "no run with id 00000000-0000-0000-0000-000000000000",
        ),
    ],
)
def test_the_command_refuses_a_bad_selection(args, message):
    _, error = failing_command(*args)
    assert str(error) == message


# Gaps: a step moved without its event, or rows written for a step that has moved on


def test_a_for_each_cancelled_while_it_fans_out_leaves_no_item_rows(publish):
    run = fan_out(publish)
    step = StepRun.objects.get(run=run, name="each")
    claimed = services.claim(step.pk, 1, "worker")
    assert claimed is not None

    services.cancel_run(run)
    # What the worker's _fan_out hands over once it has rendered the items (now fenced out).
    items = Wait(kind="items", until=None, on_due=StepResult.failure("late"), data={"items": [1]})
    services.finish(claimed.step, 1, StepResult.waiting(items))

    assert verify_run(run) == []
    assert statuses(run) == {"each": "cancelled", "after": "cancelled"}


def test_a_subflow_cancelled_while_it_starts_its_child_leaves_no_child_run(publish):
    publish({"name": "slow-child", "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}}})
    parent = publish(
        {
            "name": "impatient",
            "steps": {"call": {"type": "subflow", "with": {"workflow": "slow-child"}}},
        }
    )
    run = start(parent)
    step = StepRun.objects.get(run=run)
    claimed = services.claim(step.pk, 1, "worker")
    assert claimed is not None

    services.cancel_run(run)
    # What the subflow executor returns (now fenced out).
    call = Wait(
        kind="subflow",
        until=None,
        on_due=StepResult.failure("late"),
        data={"workflow": "slow-child"},
    )
    services.finish(claimed.step, 1, StepResult.waiting(call))

    assert not Run.objects.filter(parent_step__run=run).exclude(status="cancelled").exists()


def test_a_subflow_step_that_times_out_cancels_its_child(publish):
    publish({"name": "slow-child", "steps": {"wait": {"type": "delay", "with": {"for": "1h"}}}})
    parent = publish(
        {
            "name": "impatient",
            "steps": {
                "call": {"type": "subflow", "timeout": "1m", "with": {"workflow": "slow-child"}}
            },
        }
    )
    run = start(parent)
    run_ready(run)
    child = Run.objects.get(parent_step__run=run)
    run_ready(child)

    tick(timezone.now() + timedelta(minutes=2))

    run.refresh_from_db()
    child.refresh_from_db()
    assert run.status == "failed"
    assert_verified(run)
    assert child.status == "cancelled"
