"""State transitions of runs and steps: the only code that writes Run, StepRun and Event rows.

Every transition is one transaction that locks the Run row first, checks the current state with
a conditional update (fencing on the attempt number), and appends an Event. Queue messages are
sent after commit and carry only ids (DESIGN.md, principles 1 and 3).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flows.language.inputs import prepare_input
from flows.language.spec import OnFailure, StepSpec, WorkflowSpec
from flows.models import Workflow, WorkflowVersion
from runs.engine.plan import Graph, plan_next
from runs.engine.retry import retry_delay
from runs.engine.states import RunStatus, StepStatus
from runs.models import Event, LogLine, Run, StepRun
from steps.dispatch import dispatch
from steps.executors.base import StepResult

Ticket = tuple[int, int]
"""(step_run_id, attempt): what a queue message carries."""


class InvalidTransition(Exception):
    """The object is not in a state that allows this change (API: 409)."""


@dataclass(frozen=True)
class Claimed:
    step: StepRun
    spec: StepSpec
    timeout: float


def start_run(
    workflow: Workflow,
    input: Any,
    *,
    version: WorkflowVersion | None = None,
    user: Any = None,
    actor: str = "system",
    source: str = "api",
) -> Run:
    """Validate `input` (defaults applied), create the run with its steps and dispatch the first ones.

    Raises InputError (nothing is created) when the input does not fit the workflow's input schema.
    """
    version = version or workflow.latest_version
    if version is None:
        raise InvalidTransition(f"workflow '{workflow.name}' has no published version")
    spec = version.spec
    prepared = prepare_input(spec.input_schema, input)
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            workflow=workflow,
            version=version,
            status=RunStatus.RUNNING,
            input=prepared,
            source=source,
            created_by=user
            if user is not None and getattr(user, "is_authenticated", False)
            else None,
            started_at=now,
        )
        steps = StepRun.objects.bulk_create(
            StepRun(run=run, name=s.name, type=s.type, position=s.position) for s in spec.steps
        )
        Event.objects.bulk_create(
            [
                Event(
                    run=run,
                    workflow=workflow,
                    type="run.queued",
                    actor=actor,
                    data={"version": version.number},
                ),
                Event(run=run, workflow=workflow, type="run.running", actor=actor),
            ]
        )
        _advance(run, spec, {s.name: (s.pk, StepStatus.PENDING, 0) for s in steps}, now, actor)
    return run


def claim(step_id: int, attempt: int, worker: str) -> Claimed | None:
    """Take a ready step for `attempt`. None when the message is stale or duplicated (a no-op)."""
    step = StepRun.objects.select_related("run__version").filter(pk=step_id).first()
    if step is None or step.status != StepStatus.READY or step.attempt != attempt:
        return None
    spec = step.run.version.spec.step(step.name)
    timeout = spec.timeout if spec.timeout is not None else settings.FURROW["DEFAULT_STEP_TIMEOUT"]
    now = timezone.now()
    lease = now + timedelta(seconds=timeout + settings.FURROW["LEASE_GRACE"])
    with transaction.atomic():
        won = StepRun.objects.filter(pk=step_id, status=StepStatus.READY, attempt=attempt).update(
            status=StepStatus.RUNNING,
            worker=worker,
            started_at=now,
            lease_expires_at=lease,
            error="",
        )
        if not won:
            return None
        Event.objects.create(
            run_id=step.run_id,
            step_run_id=step_id,
            type="step.running",
            actor=f"worker:{worker}",
            data={"attempt": attempt},
        )
    step.status, step.worker, step.started_at, step.lease_expires_at = (
        StepStatus.RUNNING,
        worker,
        now,
        lease,
    )
    return Claimed(step, spec, timeout)


def step_context(step: StepRun, spec: StepSpec) -> dict[str, Any]:
    """What the step's templates see: `input`, `steps.<name>.output` of what it reads, and `run`."""
    from flows.language.templates import step_context as alias_steps

    run = step.run
    reads = reads_of(run.version, spec)
    rows = (
        StepRun.objects.filter(run_id=run.pk, name__in=reads).values_list(
            "name", "status", "output"
        )
        if reads
        else []
    )
    outputs = {name: {"output": output, "status": status} for name, status, output in rows}
    return {
        "input": run.input,
        "steps": alias_steps(outputs),
        "run": {
            "id": str(run.pk),
            "workflow": run.version.definition["name"],
            "version": run.version.number,
        },
    }


def finish(
    step: StepRun,
    attempt: int,
    result: StepResult,
    *,
    config: Any = None,
    keep_one: bool = False,
    actor: str = "system",
) -> Ticket | None:
    """Record an attempt's result and advance the run.

    A failure with attempts left becomes `retrying` (the tick loop makes it ready when due). The
    write is fenced: a result from an attempt that is no longer current changes nothing. With
    `keep_one`, a single newly ready successor is returned for the caller to run at once instead of
    being queued.
    """
    spec = step.run.version.spec
    step_spec = spec.step(step.name)
    now = timezone.now()
    with transaction.atomic():
        Run.objects.select_for_update().filter(pk=step.run_id).values_list("pk", flat=True).get()
        if result.ok:
            status, delay = StepStatus.SUCCEEDED, None
        else:
            delay = (
                retry_delay(step_spec.retry, attempt, random.random()) if result.retryable else None
            )
            status = StepStatus.RETRYING if delay is not None else StepStatus.FAILED
        fields: dict[str, Any] = {
            "status": status,
            "output": result.output,
            "error": result.error or "",
            "lease_expires_at": None,
        }
        if config is not None:
            fields["config"] = config
        if status == StepStatus.RETRYING:
            fields["next_attempt_at"] = now + timedelta(seconds=delay or 0)
        else:
            fields["finished_at"] = now
        won = StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=attempt).update(
            **fields
        )
        if not won:
            return None
        data: dict[str, Any] = {"attempt": attempt}
        if result.error:
            data["error"] = result.error
        if status == StepStatus.RETRYING:
            data["retry_in"] = round(delay or 0, 3)
        Event.objects.create(
            run_id=step.run_id, step_run_id=step.pk, type=f"step.{status}", actor=actor, data=data
        )
        if status == StepStatus.RETRYING:
            return None
        return _advance(step.run, spec, _step_states(step.run_id), now, actor, keep_one=keep_one)


def skip(
    step: StepRun, attempt: int, reason: str, *, keep_one: bool = False, actor: str = "system"
) -> Ticket | None:
    """A claimed step whose `when` guard is false: skipped, and so is what needs only it."""
    spec = step.run.version.spec
    now = timezone.now()
    with transaction.atomic():
        Run.objects.select_for_update().filter(pk=step.run_id).values_list("pk", flat=True).get()
        won = StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=attempt).update(
            status=StepStatus.SKIPPED, finished_at=now, lease_expires_at=None
        )
        if not won:
            return None
        Event.objects.create(
            run_id=step.run_id,
            step_run_id=step.pk,
            type="step.skipped",
            actor=actor,
            data={"reason": reason},
        )
        return _advance(step.run, spec, _step_states(step.run_id), now, actor, keep_one=keep_one)


def retry_due(step_id: int, attempt: int, now: datetime) -> bool:
    """Make a retrying step ready for its next attempt; exactly one caller wins."""
    with transaction.atomic():
        won = StepRun.objects.filter(
            pk=step_id, status=StepStatus.RETRYING, attempt=attempt, next_attempt_at__lte=now
        ).update(
            status=StepStatus.READY,
            attempt=F("attempt") + 1,
            next_attempt_at=None,
            dispatched_at=now,
        )
        if not won:
            return False
        run_id = StepRun.objects.values_list("run_id", flat=True).get(pk=step_id)
        Event.objects.create(
            run_id=run_id, step_run_id=step_id, type="step.ready", data={"attempt": attempt + 1}
        )
        transaction.on_commit(lambda: dispatch([(step_id, attempt + 1)]))
    return True


def redispatch(step_id: int, attempt: int, now: datetime, older_than: datetime) -> bool:
    """Send a ready step's message again when none has been picked up for a while (a lost message)."""
    won = StepRun.objects.filter(
        pk=step_id, status=StepStatus.READY, attempt=attempt, dispatched_at__lt=older_than
    ).update(dispatched_at=now)
    if won:
        dispatch([(step_id, attempt)])
    return bool(won)


def append_logs(step: StepRun, attempt: int, lines: Iterable[tuple[str, str]]) -> int:
    """Store log lines of one attempt; returns how many were written."""
    rows = [
        LogLine(run_id=step.run_id, step_run_id=step.pk, attempt=attempt, stream=stream, text=text)
        for stream, text in lines
    ]
    LogLine.objects.bulk_create(rows)
    return len(rows)


def reads_of(version: WorkflowVersion, spec: StepSpec) -> frozenset[str]:
    from steps.context import step_reads

    return step_reads(version.content_hash, version.spec, spec.name)


def _step_states(run_id: Any) -> dict[str, tuple[int, StepStatus, int]]:
    rows = StepRun.objects.filter(run_id=run_id).values_list("name", "pk", "status", "attempt")
    return {name: (pk, StepStatus(status), attempt) for name, pk, status, attempt in rows}


def _advance(
    run: Run,
    spec: WorkflowSpec,
    states: Mapping[str, tuple[int, StepStatus, int]],
    now: datetime,
    actor: str,
    *,
    keep_one: bool = False,
) -> Ticket | None:
    """Apply the engine's plan: successors ready, unreachable steps skipped, the run finished.

    The caller holds the transaction (and the Run row's lock).
    """
    plan = plan_next(
        Graph.from_spec(spec), {name: status for name, (_, status, _) in states.items()}
    )
    events: list[Event] = []
    if plan.to_skip:
        StepRun.objects.filter(run=run, name__in=plan.to_skip, status=StepStatus.PENDING).update(
            status=StepStatus.SKIPPED, finished_at=now
        )
        events += [
            Event(
                run_id=run.pk,
                step_run_id=states[name][0],
                type="step.skipped",
                actor=actor,
                data={"reason": "a step it needs did not succeed"},
            )
            for name in plan.to_skip
        ]
    tickets = [(states[name][0], states[name][2] + 1) for name in plan.to_ready]
    if tickets:
        StepRun.objects.filter(run=run, name__in=plan.to_ready, status=StepStatus.PENDING).update(
            status=StepStatus.READY, attempt=F("attempt") + 1, dispatched_at=now
        )
        events += [
            Event(
                run_id=run.pk,
                step_run_id=pk,
                type="step.ready",
                actor=actor,
                data={"attempt": attempt},
            )
            for pk, attempt in tickets
        ]
    Event.objects.bulk_create(events)
    if plan.outcome is not None:
        _finish_run(run, spec, plan.outcome, now, actor)
    kept = tickets.pop() if keep_one and len(tickets) == 1 else None
    if tickets:
        transaction.on_commit(lambda: dispatch(tickets))
    return kept


def _finish_run(
    run: Run, spec: WorkflowSpec, outcome: RunStatus, now: datetime, actor: str
) -> None:
    rows = StepRun.objects.filter(run=run).values_list("name", "status", "output", "error")
    by_name = {name: (status, output, error) for name, status, output, error in rows}
    output = {
        name: by_name[name][1] for name in spec.sinks() if by_name[name][0] == StepStatus.SUCCEEDED
    }
    failed = [
        (name, error)
        for name, (status, _, error) in by_name.items()
        if status == StepStatus.FAILED and spec.step(name).on_failure == OnFailure.FAIL
    ]
    error = "; ".join(f"step '{name}' failed: {err}" for name, err in failed)
    Run.objects.filter(pk=run.pk).update(
        status=outcome, output=output, error=error, finished_at=now
    )
    run.status, run.output, run.error, run.finished_at = outcome, output, error, now
    Event.objects.create(
        run_id=run.pk,
        workflow_id=run.workflow_id,
        type=f"run.{outcome}",
        actor=actor,
        data={"error": error} if error else {},
    )
