"""The doorbell: tell the worker cluster of a step's queue that an attempt is ready. Ids only."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django_q.tasks import async_task

from flows.language.spec import DEFAULT_QUEUE
from steps.worker_rules import cluster_name

TASK = "steps.tasks.execute"

Ticket = tuple[int, int, str]
"""(step_run_id, attempt, queue): the message carries the first two; the queue picks its cluster."""


def dispatch(tickets: Iterable[tuple[int, int] | Ticket]) -> None:
    """Queue one message per attempt on its queue's cluster. Repeating one is harmless: the claim
    fences it. A ticket without a queue goes to the default queue, whose worker hands it on if
    the step belongs elsewhere (steps.worker, run_attempt)."""
    site = settings.Q_CLUSTER["name"]
    for step_id, attempt, *rest in tickets:
        queue = rest[0] if rest else DEFAULT_QUEUE
        # Always named: in a cluster serving another queue, Django-Q2's default is that queue.
        async_task(
            TASK,
            step_id,
            attempt,
            task_name=f"step-{step_id}-{attempt}",
            save=False,
            cluster=cluster_name(queue, site),
        )
