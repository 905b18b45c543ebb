"""Races between real threads on the real database (PostgreSQL is where row locks really bite)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from runs import services
from runs.models import Event, StepRun
from steps.worker import run_attempt

pytestmark = pytest.mark.django_db(transaction=True)


def in_threads(jobs: list[Callable[[], object]]) -> None:
    """Start all jobs at the same moment; each thread closes its own connection."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def wrap(job: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def test_parents_finishing_at_once_make_their_join_ready_exactly_once(publish):
    width = 12
    steps = {"root": {"type": "noop"}}
    steps |= {f"w{i}": {"type": "noop", "needs": ["root"]} for i in range(width)}
    steps["join"] = {"type": "noop", "needs": [f"w{i}" for i in range(width)]}
    run = services.start_run(publish({"name": "race-join", "steps": steps}), {})
    root = StepRun.objects.get(run=run, name="root")
    run_attempt(root.pk, root.attempt)

    ready = list(StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt"))
    assert len(ready) == width
    in_threads([lambda pk=pk, attempt=attempt: run_attempt(pk, attempt) for pk, attempt in ready])

    join = StepRun.objects.get(run=run, name="join")
    assert join.status == "ready"
    assert Event.objects.filter(step_run=join, type="step.ready").count() == 1
    run_attempt(join.pk, join.attempt)
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_a_message_delivered_to_many_workers_at_once_runs_the_step_once(publish, tmp_path: Path):
    marker = tmp_path / "ran"
    definition = {
        "name": "race-claim",
        "steps": {"once": {"type": "shell", "run": f"echo x >> {marker}"}},
    }
    run = services.start_run(publish(definition), {})
    step = StepRun.objects.get(run=run, name="once")

    in_threads([lambda: run_attempt(step.pk, step.attempt) for _ in range(8)])

    assert marker.read_text() == "x\n"
    step.refresh_from_db()
    assert step.status == "succeeded"
    assert Event.objects.filter(step_run=step, type="step.running").count() == 1


def test_twenty_concurrent_decisions_on_one_gate_give_one_200_and_nineteen_409(
    publish, django_user_model
):
    from rest_framework.test import APIClient

    workflow = publish(
        {
            "name": "race-gate",
            "steps": {"gate": {"type": "approval"}, "after": {"type": "noop", "needs": ["gate"]}},
        }
    )
    run = services.start_run(workflow, {})
    gate = StepRun.objects.get(run=run, name="gate")
    run_attempt(gate.pk, gate.attempt)
    users = [
        django_user_model.objects.create_user(f"approver{i}", is_staff=True) for i in range(20)
    ]
    codes: list[int] = []

    def decide(user, decision):
        client = APIClient()
        client.force_authenticate(user)
        response = client.post(
            f"/api/v1/runs/{run.pk}/approvals/gate", {"decision": decision}, format="json"
        )
        codes.append(response.status_code)

    in_threads(
        [
            lambda u=user, d=("approve" if i % 2 else "reject"): decide(u, d)
            for i, user in enumerate(users)
        ]
    )

    assert sorted(codes) == [200] + [409] * 19
    assert Event.objects.filter(run=run, type="approval.decided").count() == 1
    gate.refresh_from_db()
    assert gate.status in ("succeeded", "failed")


def test_an_idempotency_key_raced_from_twenty_threads_gives_one_run(publish):
    workflow = publish({"name": "race-idem", "steps": {"a": {"type": "noop"}}})
    ids: list[str] = []

    def start():
        run = services.start_run(workflow, {"n": 1}, idempotency_key="same-key")
        ids.append(str(run.pk))

    in_threads([start for _ in range(20)])

    assert len(ids) == 20
    assert len(set(ids)) == 1
    from runs.models import Run

    assert Run.objects.filter(workflow=workflow).count() == 1


def test_timers_fire_exactly_once_however_many_tick_loops_run(publish):
    from datetime import timedelta

    from django.utils import timezone

    from runs.timers import tick

    steps = {f"d{i}": {"type": "delay", "with": {"for": "1h"}} for i in range(10)}
    run = services.start_run(publish({"name": "race-timers", "steps": steps}), {})
    for pk, attempt in list(
        StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt")
    ):
        run_attempt(pk, attempt)
    assert StepRun.objects.filter(run=run, status="waiting").count() == 10
    later = timezone.now() + timedelta(hours=1, seconds=1)

    in_threads([lambda: tick(later) for _ in range(8)])

    assert Event.objects.filter(run=run, type="step.succeeded").count() == 10
    assert Event.objects.filter(run=run, type="run.succeeded").count() == 1
