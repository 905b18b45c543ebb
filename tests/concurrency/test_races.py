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
