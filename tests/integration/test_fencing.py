"""Fencing (DESIGN.md, principle 3): once the sweeper declares an attempt lost, nothing that attempt
sends later (a completion, a log line, a heartbeat) changes anything, whether the step is waiting
for its retry or a newer attempt is already running."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from runs import services
from runs.models import Approval, Event, LogLine, Run, StepRun
from runs.timers import tick
from steps.executors.base import StepResult, Wait

pytestmark = pytest.mark.django_db

WORKFLOW = {
    "name": "fenced",
    "steps": {
        "slow": {"type": "shell", "run": "true", "retry": {"max_attempts": 2}},
        "after": {"type": "noop", "needs": ["slow"]},
    },
}
CHILD = {"name": "fenced-child", "steps": {"only": {"type": "noop"}}}


def lose_attempt_1(publish: Any) -> services.Claimed:
    """Start a run, claim its first step as attempt 1, and let the sweeper declare it lost."""
    run = services.start_run(publish(WORKFLOW), {})
    step = StepRun.objects.get(run=run, name="slow")
    claimed = services.claim(step.pk, 1, "doomed:1")
    assert claimed is not None
    assert services.append_logs(claimed.step, 1, [("stdout", "before the loss")]) == 1
    # Test setup only: the worker stopped answering long ago.
    StepRun.objects.filter(pk=step.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert tick() == 1
    return claimed


def snapshot(step_id: int) -> dict[str, Any]:
    row = StepRun.objects.values(
        "status", "attempt", "worker", "output", "error", "lease_expires_at", "finished_at"
    ).get(pk=step_id)
    return {
        **row,
        "events": Event.objects.count(),
        "logs": LogLine.objects.count(),
        "runs": Run.objects.count(),
        "steps": StepRun.objects.count(),
        "approvals": Approval.objects.count(),
    }


def assert_attempt_1_is_refused(claimed: services.Claimed) -> None:
    step = claimed.step
    before = snapshot(step.pk)

    assert services.finish(step, 1, StepResult.success({"late": True})) is None
    assert services.finish(step, 1, StepResult.failure("late failure")) is None
    assert services.append_logs(step, 1, [("stdout", "late line")]) == 0
    assert services.heartbeat(step.pk, 1) is False

    assert snapshot(step.pk) == before


def test_a_lost_attempts_completion_log_lines_and_heartbeat_change_nothing(publish):
    claimed = lose_attempt_1(publish)
    step_id = claimed.step.pk

    # While the step waits for its retry...
    assert StepRun.objects.values_list("status", "attempt").get(pk=step_id) == ("retrying", 1)
    assert_attempt_1_is_refused(claimed)

    # ...and while attempt 2 runs on another worker.
    assert tick() == 1
    second = services.claim(step_id, 2, "healthy:2")
    assert second is not None
    assert_attempt_1_is_refused(claimed)
    step = StepRun.objects.get(pk=step_id)
    assert (step.status, step.attempt, step.worker) == ("running", 2, "healthy:2")

    assert services.append_logs(second.step, 2, [("stdout", "attempt 2")]) == 1
    services.finish(second.step, 2, StepResult.success({"attempt": 2}))

    step.refresh_from_db()
    assert (step.status, step.attempt, step.output) == ("succeeded", 2, {"attempt": 2})
    events = [
        (e.type, e.actor, e.data.get("attempt"), e.data.get("error"))
        for e in Event.objects.filter(step_run_id=step_id).order_by("id")
    ]
    assert events == [
        ("step.ready", "system", 1, None),
        ("step.running", "worker:doomed:1", 1, None),
        (
            "step.retrying",
            "sweeper",
            1,
            "attempt 1 lost: worker doomed:1 stopped answering",
        ),
        ("step.ready", "system", 2, None),
        ("step.running", "worker:healthy:2", 2, None),
        ("step.succeeded", "system", 2, None),
    ]
    lines = LogLine.objects.filter(step_run_id=step_id).order_by("id")
    assert [(line.attempt, line.text) for line in lines] == [
        (1, "before the loss"),
        (2, "attempt 2"),
    ]


WAITS = {
    "subflow": Wait(
        kind="subflow",
        until=None,
        on_due=StepResult.failure("child timed out"),
        data={"workflow": "fenced-child", "input": {}},
    ),
    "approval": Wait(
        kind="approval",
        until=None,
        on_due=StepResult.failure("no decision"),
        data={"message": "ship it?"},
    ),
    "items": Wait(
        kind="items",
        until=None,
        on_due=StepResult.failure("items did not finish"),
        data={"items": [1, 2, 3]},
    ),
}


@pytest.mark.parametrize("kind", list(WAITS))
def test_a_lost_attempts_waiting_result_creates_nothing(publish, kind):
    # A waiting result would start a child run, open an approval or create items: all of it must
    # be refused before anything is created, not only the step's own update.
    publish(CHILD)
    claimed = lose_attempt_1(publish)
    before = snapshot(claimed.step.pk)

    assert services.finish(claimed.step, 1, StepResult.waiting(WAITS[kind])) is None

    assert snapshot(claimed.step.pk) == before
