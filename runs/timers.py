"""The tick loop's work: due retries, lost leases, stranded ready steps.

Each function does one pass and returns how much it did, so the loop stays a thin `while` and
each pass is testable. Every change is a conditional update, so any number of tick loops may
run at once and each timer still fires exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from runs import services
from runs.engine.states import StepStatus
from runs.models import StepRun
from steps.executors.base import StepResult

BATCH = 500


def promote_due_retries(now: datetime) -> int:
    due = StepRun.objects.filter(status=StepStatus.RETRYING, next_attempt_at__lte=now).values_list(
        "pk", "attempt"
    )[:BATCH]
    return sum(services.retry_due(pk, attempt, now) for pk, attempt in due)


def reap_lost_leases(now: datetime) -> int:
    """A running attempt whose lease ran out lost its worker: record it as failed (retry policy applies)."""
    lost = StepRun.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=now
    ).select_related("run__version")[:BATCH]
    count = 0
    for step in lost:
        result = StepResult.failure(
            f"attempt {step.attempt} lost: worker {step.worker or '?'} stopped answering"
        )
        services.finish(step, step.attempt, result, actor="sweeper")
        count += 1
    return count


def redispatch_stranded(now: datetime) -> int:
    older_than = now - timedelta(seconds=settings.FURROW["REDISPATCH_AFTER"])
    stranded = StepRun.objects.filter(
        status=StepStatus.READY, dispatched_at__lt=older_than
    ).values_list("pk", "attempt")[:BATCH]
    return sum(services.redispatch(pk, attempt, now, older_than) for pk, attempt in stranded)


def tick(now: datetime | None = None) -> int:
    """One pass over every timer; returns the number of changes made."""
    now = now or timezone.now()
    return promote_due_retries(now) + reap_lost_leases(now) + redispatch_stranded(now)
