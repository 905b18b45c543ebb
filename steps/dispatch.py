"""The doorbell: tell the worker cluster that a step attempt is ready. Carries ids only."""

from __future__ import annotations

from collections.abc import Iterable

from django_q.tasks import async_task

TASK = "steps.tasks.execute"


def dispatch(tickets: Iterable[tuple[int, int]]) -> None:
    """Queue one message per (step_run_id, attempt). Repeating one is harmless: the claim fences it."""
    for step_id, attempt in tickets:
        async_task(TASK, step_id, attempt, task_name=f"step-{step_id}-{attempt}", save=False)
