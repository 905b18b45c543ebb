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
from runs.engine.states import STEP_ACTIVE, RunStatus, StepStatus
from runs.models import Run, StepRun
from steps.executors.base import StepResult
from steps.processes import kill_step_processes, on_this_host
from steps.workers import served_queues

BATCH = 500


def promote_due_retries(now: datetime) -> int:
    due = StepRun.objects.filter(status=StepStatus.RETRYING, next_attempt_at__lte=now).values_list(
        "pk", "attempt"
    )[:BATCH]
    return sum(services.retry_due(pk, attempt, now) for pk, attempt in due)


def reap_lost_leases(now: datetime) -> int:
    """A running attempt whose lease ran out lost its worker: record it as failed (retry policy
    applies), and kill what its shell commands left running if the worker was on this machine."""
    lost = StepRun.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=now
    ).select_related("run__version")[:BATCH]
    count = 0
    for step in lost:
        result = StepResult.failure(
            f"attempt {step.attempt} lost: worker {step.worker or '?'} stopped answering"
        )
        services.finish(step, step.attempt, result, actor="sweeper")
        if on_this_host(step.worker):
            kill_step_processes(str(step.run_id), step.name, step.attempt)
        count += 1
    return count


def redispatch_stranded(now: datetime) -> int:
    older_than = now - timedelta(seconds=settings.FURROW["REDISPATCH_AFTER"])
    stranded = StepRun.objects.filter(
        status=StepStatus.READY, dispatched_at__lt=older_than
    ).values_list("pk", "attempt", "queue")[:BATCH]
    served = served_queues({queue for _, _, queue in stranded}, now)
    return sum(
        services.redispatch(pk, attempt, now, older_than, queue, send=queue in served)
        for pk, attempt, queue in stranded
    )


def wake_due_waits(now: datetime) -> int:
    """Waiting steps whose time has come: a delay's end, a callback's or a child run's timeout."""
    due = StepRun.objects.filter(status=StepStatus.WAITING, next_attempt_at__lte=now).values_list(
        "pk", "attempt", "waiting"
    )[:BATCH]
    return sum(
        services.resume(
            pk, attempt, StepResult.from_json((waiting or {}).get("on_due", {})), actor="timer"
        )
        for pk, attempt, waiting in due
    )


def finish_orphaned_subflows(now: datetime) -> int:
    """Subflow steps whose child ended but were not told (the process stopped in between)."""
    orphans = StepRun.objects.filter(
        status=StepStatus.WAITING,
        child_runs__status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED],
    ).values_list("pk", "child_runs__pk")[:BATCH]
    return sum(services.complete_subflow(pk, child, actor="sweeper") for pk, child in orphans)


def expire_deadlines(now: datetime) -> int:
    late = Run.objects.filter(
        status__in=[RunStatus.RUNNING, RunStatus.PAUSED], deadline_at__lte=now
    ).values_list("pk", flat=True)[:BATCH]
    return sum(services.expire_run(pk, now) for pk in late)


def settle_stuck_runs(now: datetime) -> int:
    """Running runs with no step that can move them (all ended, or only pending ones left):
    plan them again. Normally nothing matches: each step's end plans its run in the same commit."""
    moving = [s.value for s in (*STEP_ACTIVE,)]
    stuck = (
        Run.objects.filter(status=RunStatus.RUNNING, started_at__lt=now - timedelta(seconds=5))
        .exclude(steps__status__in=moving)
        .values_list("pk", flat=True)[:BATCH]
    )
    return sum(services.settle(pk) for pk in stuck)


def admit_waiting_runs(now: datetime) -> int:
    """Queued runs whose workflow has room (a finished run's admission may have been lost)."""
    workflows = (
        Run.objects.filter(status=RunStatus.QUEUED, workflow__paused=False)
        .values_list("workflow_id", flat=True)
        .distinct()[:BATCH]
    )
    return sum(services.admit_queued(pk, actor="sweeper") for pk in workflows)


def tick(now: datetime | None = None) -> int:
    """One pass over every timer; returns the number of changes made."""
    now = now or timezone.now()
    return (
        promote_due_retries(now)
        + wake_due_waits(now)
        + reap_lost_leases(now)
        + redispatch_stranded(now)
        + finish_orphaned_subflows(now)
        + expire_deadlines(now)
        + settle_stuck_runs(now)
        + admit_waiting_runs(now)
    )
