"""State transitions of runs and steps: the only code that writes Run, StepRun and Event rows.

Every transition is one transaction that locks the Run row first, checks the current state with
a conditional update (fencing on the attempt number), and appends an Event. Queue messages are
sent after commit and carry only ids (DESIGN.md, principles 1 and 3).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from flows.language.errors import Problem
from flows.language.inputs import InputError, prepare_input
from flows.language.spec import DEFAULT_QUEUE, OnFailure, StepSpec, WorkflowSpec
from flows.models import Workflow, WorkflowVersion
from runs.engine.plan import Graph, plan_next
from runs.engine.retry import retry_delay
from runs.engine.states import STEP_ACTIVE, STEP_FINAL, RunStatus, StepStatus
from runs.models import Approval, Callback, DeadLetter, Event, LogLine, Run, StepRun
from steps.dispatch import Ticket, dispatch
from steps.executors.base import StepResult, Wait
from steps.processes import kill_step_processes, on_this_host

MAX_SUBFLOW_DEPTH = 10
MAX_ITEMS = 10_000


class InvalidTransition(Exception):
    """The object is not in a state that allows this change (API: 409)."""


class CallbackRejected(Exception):
    """A callback token that is unknown (404) or no longer usable (410); nothing was changed."""

    def __init__(self, message: str, *, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


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
    parent_step: StepRun | None = None,
    depth: int = 0,
    idempotency_key: str = "",
    priority: int | None = None,
) -> Run:
    """Validate `input` (defaults applied), create the run with its steps and start it.

    The run starts at once, or waits `queued` while its workflow is paused or has `max_runs` runs
    going. Raises InputError (nothing is created) when the input does not fit the input schema.
    With an `idempotency_key` already used for this workflow, returns that run instead (its
    `created` attribute is False); IdempotencyConflict if it was started with another input.
    """
    version = version or workflow.latest_version
    if version is None:
        raise InvalidTransition(f"workflow '{workflow.name}' has no published version")
    spec = version.spec
    prepared = prepare_input(spec.input_schema, input)
    if idempotency_key:
        existing = _same_key(workflow, idempotency_key, prepared)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            run = _create_run(
                workflow,
                version,
                prepared,
                user,
                actor,
                source,
                parent_step,
                depth,
                idempotency_key,
                spec.priority if priority is None else priority,
            )
    except IntegrityError:
        # A concurrent start with the same key won the unique constraint: that is the run.
        existing = _same_key(workflow, idempotency_key, prepared) if idempotency_key else None
        if existing is None:
            raise
        return existing
    run.created = True  # type: ignore[attr-defined]
    return run


class IdempotencyConflict(InvalidTransition):
    """The idempotency key was used for a run with a different input (409)."""


def _same_key(workflow: Workflow, key: str, prepared: Any) -> Run | None:
    run = Run.objects.filter(workflow=workflow, idempotency_key=key).first()
    if run is None:
        return None
    if run.input != prepared:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for run {run.pk} with a different input"
        )
    run.created = False  # type: ignore[attr-defined]
    return run


def _create_run(
    workflow: Workflow,
    version: WorkflowVersion,
    prepared: Any,
    user: Any,
    actor: str,
    source: str,
    parent_step: StepRun | None,
    depth: int,
    idempotency_key: str,
    priority: int,
    *,
    hold: bool = False,
) -> Run:
    """With `hold`, the run is left queued for the caller to prepare and start."""
    now = timezone.now()
    spec = version.spec
    # Serialises admission per workflow (max_runs), and orders it with finishing runs.
    _lock_workflow(workflow)
    run = Run.objects.create(
        workflow=workflow,
        version=version,
        status=RunStatus.QUEUED,
        input=prepared,
        source=source,
        created_by=user if user is not None and getattr(user, "is_authenticated", False) else None,
        parent_step=parent_step,
        depth=depth,
        idempotency_key=idempotency_key,
        priority=priority,
    )
    StepRun.objects.bulk_create(
        StepRun(run=run, name=s.name, type=s.type, position=s.position, queue=s.queue)
        for s in spec.steps
    )
    Event.objects.create(
        run=run,
        workflow=workflow,
        type="run.queued",
        actor=actor,
        data={"version": version.number, "priority": priority},
    )
    if not hold and (parent_step is not None or _has_room(workflow, spec, now)):
        # A child run never queues behind its parent's siblings: that could deadlock.
        _begin(run, spec, now, actor)
    return run


def _lock_workflow(workflow: Workflow) -> None:
    """Lock the workflow's row; `paused` is refreshed from it (a pause may have just happened)."""
    workflow.paused = (
        Workflow.objects.select_for_update()
        .filter(pk=workflow.pk)
        .values_list("paused", flat=True)
        .get()
    )


def _has_room(workflow: Workflow, spec: WorkflowSpec, now: datetime) -> bool:
    """Whether one more run may start. The caller holds the workflow's lock (_lock_workflow)."""
    if workflow.paused:
        return False
    if spec.max_runs is None:
        return True
    going = Run.objects.filter(
        workflow=workflow, status__in=[RunStatus.RUNNING, RunStatus.PAUSED]
    ).count()
    return going < spec.max_runs


def _begin(run: Run, spec: WorkflowSpec, now: datetime, actor: str) -> None:
    """A queued run starts: its first steps become ready. The caller holds the transaction."""
    deadline = now + timedelta(seconds=spec.deadline) if spec.deadline is not None else None
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=now, deadline_at=deadline
    )
    run.status, run.started_at, run.deadline_at = RunStatus.RUNNING, now, deadline
    Event.objects.create(run=run, workflow_id=run.workflow_id, type="run.running", actor=actor)
    _advance(run, spec, _step_states(run.pk), now, actor)


def admit_queued(workflow_id: int, *, actor: str = "system") -> int:
    """Start queued runs of a workflow while it has room: highest priority first, then oldest."""
    started = 0
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
        queued = (
            Run.objects.filter(workflow=workflow, status=RunStatus.QUEUED)
            .select_related("version")
            .order_by("-priority", "created_at")
        )
        now = timezone.now()
        for run in queued[:BATCH_ADMIT]:
            if not _has_room(workflow, run.version.spec, now):
                break
            _begin(run, run.version.spec, now, actor)
            started += 1
    return started


BATCH_ADMIT = 100


def claim(step_id: int, attempt: int, worker: str, *, queue: str | None = None) -> Claimed | None:
    """Take a ready step for `attempt`. None when the message is stale or duplicated (a no-op).

    A worker serving `queue` never takes a step of another queue: it sends the message on to
    that queue's cluster and returns None. `queue=None` (in-process callers) takes any step.
    """
    step = StepRun.objects.select_related("run__version").filter(pk=step_id).first()
    if step is None or step.status != StepStatus.READY or step.attempt != attempt:
        return None
    if queue is not None and step.queue != queue:
        dispatch([(step_id, attempt, step.queue)])
        return None
    if step.run.status != RunStatus.RUNNING:
        return None  # paused: it stays ready, and resuming sends it again
    spec = step.run.version.spec.step(step.spec_name)
    timeout = spec.timeout if spec.timeout is not None else settings.FURROW["DEFAULT_STEP_TIMEOUT"]
    now = timezone.now()
    lease = now + timedelta(seconds=settings.FURROW["LEASE_SECONDS"])
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
    """What the step's templates see.

    `input` (the run's), `steps.<name>.output` of what it reads, `run`, `parents` (outputs of the
    steps it needs, by name), `parent` (the output of its single need) and, for one item of a
    for_each step, `item`.
    """
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
    parents = {name: outputs[name]["output"] for name in spec.needs if name in outputs}
    context: dict[str, Any] = {
        "input": run.input,
        "steps": alias_steps(outputs),
        "run": {
            "id": str(run.pk),
            "workflow": run.version.definition["name"],
            "version": run.version.number,
        },
        "parents": alias_steps(parents),
    }
    if len(spec.needs) == 1:
        context["parent"] = parents.get(spec.needs[0])
    if step.item_of_id is not None:
        context["item"] = step.item
    return context


def data_input(spec: StepSpec, context: Mapping[str, Any]) -> Any:
    """SPANE's rule: one parent gives its output, several a mapping by name, none the run input."""
    if not spec.needs:
        return context["input"]
    if len(spec.needs) == 1:
        return context.get("parent")
    return {name: context["parents"].get(name) for name in spec.needs}


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

    A failure with attempts left becomes `retrying` (the tick loop makes it ready when due); a
    deferred attempt goes back without counting; a waiting result parks the step without a worker.
    The write is fenced: a result from an attempt that is no longer current changes nothing. With
    `keep_one`, a single newly ready successor is returned for the caller to run at once instead of
    being queued.
    """
    with transaction.atomic():
        step.run.status = _lock_run(step.run_id)
        return _conclude(
            step, attempt, result, StepStatus.RUNNING, actor, config=config, keep_one=keep_one
        )


def resume(step_id: int, attempt: int, result: StepResult, *, actor: str = "system") -> bool:
    """End a waiting step with `result` (its timer fired, its child run or items ended)."""
    step = StepRun.objects.select_related("run__version").filter(pk=step_id).first()
    if step is None:
        return False
    with transaction.atomic():
        step.run.status = _lock_run(step.run_id)
        waiting = (
            StepRun.objects.filter(pk=step_id, status=StepStatus.WAITING, attempt=attempt)
            .values_list("waiting", flat=True)
            .first()
        )
        if waiting is None:
            return False
        if waiting.get("kind") in APPROVAL_KINDS:
            approval = Approval.objects.get(pk=waiting["data"]["approval"])
            _apply_decision(
                step,
                approval,
                approval.default,
                actor=actor,
                expired=True,
                comment="no decision before the timeout; the default applies",
            )
            return True
        _conclude(step, attempt, result, StepStatus.WAITING, actor)
    return True


def skip(
    step: StepRun, attempt: int, reason: str, *, keep_one: bool = False, actor: str = "system"
) -> Ticket | None:
    """A claimed step whose `when` guard is false: skipped, and so is what needs only it."""
    spec = step.run.version.spec
    now = timezone.now()
    with transaction.atomic():
        step.run.status = _lock_run(step.run_id)
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
        return _after_final(step, spec, now, actor, keep_one=keep_one)


def _lock_run(run_id: Any) -> str:
    """Lock the run's row for this transaction; returns its status as of now."""
    return Run.objects.select_for_update().filter(pk=run_id).values_list("status", flat=True).get()


def _conclude(
    step: StepRun,
    attempt: int,
    result: StepResult,
    from_status: StepStatus,
    actor: str,
    *,
    config: Any = None,
    keep_one: bool = False,
) -> Ticket | None:
    """Apply one result to a step in `from_status` at `attempt`. The caller holds the run's lock."""
    if result.wait is not None:
        return _park(step, attempt, result, from_status, actor, config=config)
    spec = step.run.version.spec
    step_spec = spec.step(step.spec_name)
    now = timezone.now()
    fields: dict[str, Any] = {"lease_expires_at": None}
    if config is not None:
        fields["config"] = config
    data: dict[str, Any] = {"attempt": attempt}
    if result.defer is not None:
        status = StepStatus.RETRYING
        fields.update(
            deferrals=F("deferrals") + 1,
            next_attempt_at=now + timedelta(seconds=result.defer),
            error=result.error or "",
        )
        data.update(reason=result.error or "", retry_in=round(result.defer, 3))
        event = "step.deferred"
    else:
        if result.ok:
            status, delay = StepStatus.SUCCEEDED, None
        else:
            counted = attempt - step.deferrals
            delay = (
                retry_delay(step_spec.retry, counted, random.random()) if result.retryable else None
            )
            status = StepStatus.RETRYING if delay is not None else StepStatus.FAILED
        fields.update(
            output=result.output,
            error=result.error or "",
            waiting=None,
            branch=list(result.next) if result.next is not None and result.ok else None,
        )
        if status == StepStatus.RETRYING:
            fields["next_attempt_at"] = now + timedelta(seconds=delay or 0)
            data["retry_in"] = round(delay or 0, 3)
        else:
            fields["finished_at"] = now
            fields["next_attempt_at"] = None
        if result.error:
            data["error"] = result.error
        if result.next is not None and result.ok:
            data["next"] = list(result.next)
        event = f"step.{status}"
    fields["status"] = status
    won = StepRun.objects.filter(pk=step.pk, status=from_status, attempt=attempt).update(**fields)
    if not won:
        return None
    if from_status == StepStatus.WAITING and step.type == "subflow":
        _cancel_children(step, actor)
    events = [Event(run_id=step.run_id, step_run_id=step.pk, type=event, actor=actor, data=data)]
    if status == StepStatus.FAILED and step_spec.dead_letter and result.defer is None:
        letter = DeadLetter.objects.create(
            run_id=step.run_id,
            step_run_id=step.pk,
            attempts=attempt - step.deferrals,
            error=result.error or "",
            config=config if config is not None else step.config,
        )
        events.append(
            Event(
                run_id=step.run_id,
                step_run_id=step.pk,
                type="step.dead_lettered",
                actor=actor,
                data={"dead_letter": letter.pk, "attempts": letter.attempts},
            )
        )
    hook = step_spec.hooks.get(_HOOK_OF.get(status, ""))
    if hook is not None and step.item_of_id is None:
        events.append(_hook_event(step, status, hook, result, actor))
    Event.objects.bulk_create(events)
    if status == StepStatus.RETRYING:
        return None
    return _after_final(step, spec, now, actor, keep_one=keep_one)


_HOOK_OF = {StepStatus.FAILED: "on_failure", StepStatus.SUCCEEDED: "on_success"}


def _hook_event(
    step: StepRun, status: StepStatus, hook: Mapping[str, Any], result: StepResult, actor: str
) -> Event:
    """Planter's onFailure/onSuccess: a message with labels, for people and outbound hooks."""
    from flows.language.templates import TemplateError, render_string

    message = hook.get("message", "")
    try:
        message = str(
            render_string(
                message,
                {
                    "step": step.name,
                    "status": str(status),
                    "error": result.error or "",
                    "output": result.output,
                    "input": step.run.input,
                },
            )
        )
    except TemplateError as exc:
        message = f"{message} (the message did not render: {exc})"
    return Event(
        run_id=step.run_id,
        step_run_id=step.pk,
        type="step.hook",
        actor=actor,
        data={
            "hook": _HOOK_OF[status],
            "message": message,
            "labels": dict(hook.get("labels", {})),
            "runs": list(hook.get("run", [])),
        },
    )


def _cancel_children(step: StepRun, actor: str) -> None:
    """A subflow step that ended without its child (timed out) leaves no child running."""
    for child in Run.objects.filter(
        parent_step_id=step.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED]
    ):
        _close_run(
            child,
            RunStatus.CANCELLED,
            actor=actor,
            reason=f"its parent step '{step.name}' ended without it",
        )


def _after_final(
    step: StepRun, spec: WorkflowSpec, now: datetime, actor: str, *, keep_one: bool = False
) -> Ticket | None:
    """A step reached a final status: advance its fan-out parent, or the run."""
    if step.item_of_id is not None:
        _advance_items(step.item_of_id, now, actor)
        return None
    run = step.run  # its status was read under the run's lock by the caller
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        return None
    return _advance(run, spec, _step_states(step.run_id), now, actor, keep_one=keep_one)


def _park(
    step: StepRun,
    attempt: int,
    result: StepResult,
    from_status: StepStatus,
    actor: str,
    *,
    config: Any = None,
) -> Ticket | None:
    """The step waits, holding no worker: for a callback, a timer, a child run or its items."""
    wait = result.wait
    assert wait is not None
    if not StepRun.objects.filter(pk=step.pk, status=from_status, attempt=attempt).exists():
        return None  # fenced out (cancelled, lost): start no child, create no items or approval
    data = dict(wait.data)
    try:
        if wait.kind in APPROVAL_KINDS:
            data["approval"] = _open_approval(step, attempt, wait).pk
        elif wait.kind == "subflow":
            data["run"] = str(_start_child(step, data).pk)
        elif wait.kind == "items":
            data = {"count": _create_items(step, data["items"])}
    except _CannotWait as exc:
        failure = StepResult.failure(str(exc), retryable=exc.retryable)
        return _conclude(step, attempt, failure, from_status, actor, config=config)
    fields: dict[str, Any] = {
        "status": StepStatus.WAITING,
        "lease_expires_at": None,
        "next_attempt_at": wait.until,
        "output": result.output,
        "waiting": {"kind": wait.kind, "on_due": wait.on_due.as_json(), "data": data},
    }
    if config is not None:
        fields["config"] = config
    won = StepRun.objects.filter(pk=step.pk, status=from_status, attempt=attempt).update(**fields)
    if not won:
        return None
    event_data: dict[str, Any] = {"attempt": attempt, "kind": wait.kind, **data}
    if wait.until is not None:
        event_data["until"] = wait.until.isoformat()
    Event.objects.create(
        run_id=step.run_id, step_run_id=step.pk, type="step.waiting", actor=actor, data=event_data
    )
    if wait.kind == "items":
        _advance_items(step.pk, timezone.now(), actor)
    elif wait.kind == "callback":
        early = (
            Callback.objects.filter(step_run_id=step.pk, attempt=attempt, result__isnull=False)
            .values_list("result", flat=True)
            .first()
        )
        if early is not None:  # the service answered before we finished parking
            step.status = StepStatus.WAITING
            _conclude(step, attempt, StepResult.from_json(early), StepStatus.WAITING, actor)
    return None


class _CannotWait(Exception):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


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
        run_id, queue = StepRun.objects.values_list("run_id", "queue").get(pk=step_id)
        Event.objects.create(
            run_id=run_id, step_run_id=step_id, type="step.ready", data={"attempt": attempt + 1}
        )
        transaction.on_commit(lambda: dispatch([(step_id, attempt + 1, queue)]))
    return True


def redispatch(
    step_id: int,
    attempt: int,
    now: datetime,
    older_than: datetime,
    queue: str = DEFAULT_QUEUE,
    *,
    send: bool = True,
) -> bool:
    """Send a ready step's message again when none has been picked up for a while (a lost message).

    With `send=False` (no worker serves its queue) only the clock restarts: the first message
    still waits on the broker for a worker, and copies would pile up there meanwhile.
    """
    won = StepRun.objects.filter(
        pk=step_id, status=StepStatus.READY, attempt=attempt, dispatched_at__lt=older_than
    ).update(dispatched_at=now)
    if won and send:
        dispatch([(step_id, attempt, queue)])
    return bool(won)


def append_logs(step: StepRun, attempt: int, lines: Iterable[tuple[str, str]]) -> int:
    """Store log lines of one attempt; returns how many were written.

    Fenced: lines from an attempt that is no longer running (lost, cancelled, superseded) are
    refused (0 written). Writing also renews the attempt's lease, as a heartbeat does.
    """
    rows = [
        LogLine(run_id=step.run_id, step_run_id=step.pk, attempt=attempt, stream=stream, text=text)
        for stream, text in lines
    ]
    with transaction.atomic():
        if not heartbeat(step.pk, attempt):
            return 0
        LogLine.objects.bulk_create(rows)
    return len(rows)


def heartbeat(step_id: int, attempt: int) -> bool:
    """Renew a running attempt's lease. False when the attempt is no longer current: stop it."""
    lease = timezone.now() + timedelta(seconds=settings.FURROW["LEASE_SECONDS"])
    return bool(
        StepRun.objects.filter(pk=step_id, status=StepStatus.RUNNING, attempt=attempt).update(
            lease_expires_at=lease
        )
    )


def reads_of(version: WorkflowVersion, spec: StepSpec) -> frozenset[str]:
    from steps.context import step_reads

    return step_reads(version.content_hash, version.spec, spec.name)


def _step_states(run_id: Any) -> dict[str, tuple[int, StepStatus, int, Any]]:
    rows = StepRun.objects.filter(run_id=run_id, item_of__isnull=True).values_list(
        "name", "pk", "status", "attempt", "branch"
    )
    return {
        name: (pk, StepStatus(status), attempt, branch)
        for name, pk, status, attempt, branch in rows
    }


def _advance(
    run: Run,
    spec: WorkflowSpec,
    states: Mapping[str, tuple[int, StepStatus, int, Any]],
    now: datetime,
    actor: str,
    *,
    keep_one: bool = False,
) -> Ticket | None:
    """Apply the engine's plan: successors ready, unreachable steps skipped, the run finished.

    The caller holds the transaction (and the Run row's lock).
    """
    plan = plan_next(
        Graph.from_spec(spec),
        {name: status for name, (_, status, _, _) in states.items()},
        {name: branch for name, (_, _, _, branch) in states.items() if branch is not None},
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
                data={"reason": plan.reasons.get(name, "a step it needs did not succeed")},
            )
            for name in plan.to_skip
        ]
    to_ready = list(plan.to_ready)
    if run.status == RunStatus.PAUSED:
        to_ready = []  # they stay pending; resuming plans again
    elif spec.max_parallel_steps is not None:
        active = sum(status in STEP_ACTIVE for _, status, _, _ in states.values())
        to_ready = to_ready[: max(0, spec.max_parallel_steps - active)]
    tickets = [(states[name][0], states[name][2] + 1, spec.step(name).queue) for name in to_ready]
    if tickets:
        events += _make_ready(run.pk, tickets, now, actor)
    Event.objects.bulk_create(events)
    if plan.outcome is not None and len(to_ready) == len(plan.to_ready):
        _finish_run(run, spec, plan.outcome, now, actor)
    kept = tickets.pop() if keep_one and len(tickets) == 1 else None
    if tickets:
        transaction.on_commit(lambda: dispatch(tickets))
    return kept


def _make_ready(run_id: Any, tickets: list[Ticket], now: datetime, actor: str) -> list[Event]:
    """Pending steps become ready for their next attempt; returns their events, to be saved."""
    StepRun.objects.filter(pk__in=[t[0] for t in tickets], status=StepStatus.PENDING).update(
        status=StepStatus.READY, attempt=F("attempt") + 1, dispatched_at=now
    )
    return [
        Event(
            run_id=run_id, step_run_id=pk, type="step.ready", actor=actor, data={"attempt": attempt}
        )
        for pk, attempt, _ in tickets
    ]


# --- for_each items ---------------------------------------------------------------------------


def _create_items(step: StepRun, items: list[Any]) -> int:
    if len(items) > MAX_ITEMS:
        raise _CannotWait(f"for_each produced {len(items)} items; the limit is {MAX_ITEMS}")
    StepRun.objects.bulk_create(
        StepRun(
            run_id=step.run_id,
            name=f"{step.spec_name}[{index}]",
            type=step.type,
            position=step.position,
            item_of_id=step.pk,
            item_index=index,
            item=value,
            queue=step.queue,
        )
        for index, value in enumerate(items)
    )
    return len(items)


def _advance_items(parent_id: int, now: datetime, actor: str) -> None:
    """Start items up to the step's parallelism; when all have ended, end the step with them all.

    The caller holds the run's lock.
    """
    parent = StepRun.objects.select_related("run__version").get(pk=parent_id)
    if parent.status != StepStatus.WAITING:
        return
    fan = parent.run.version.spec.step(parent.name).for_each
    assert fan is not None
    rows = list(
        StepRun.objects.filter(item_of_id=parent_id)
        .order_by("item_index")
        .values_list("pk", "status", "attempt", "item", "output", "error")
    )
    statuses = [StepStatus(status) for _, status, *_ in rows]
    failed = [i for i, status in enumerate(statuses) if status == StepStatus.FAILED]
    pending = [i for i, status in enumerate(statuses) if status == StepStatus.PENDING]
    if failed and fan.on_item_failure == OnFailure.FAIL and pending:
        # Fail fast: items not yet started never will; those running finish on their own.
        StepRun.objects.filter(pk__in=[rows[i][0] for i in pending]).update(
            status=StepStatus.SKIPPED, finished_at=now
        )
        Event.objects.bulk_create(
            Event(
                run_id=parent.run_id,
                step_run_id=rows[i][0],
                type="step.skipped",
                actor=actor,
                data={"reason": "an earlier item failed"},
            )
            for i in pending
        )
        for i in pending:
            statuses[i] = StepStatus.SKIPPED
        pending = []
    active = sum(status not in STEP_FINAL and status != StepStatus.PENDING for status in statuses)
    start = pending[: max(0, fan.parallelism - active)]
    if start:
        tickets = [(rows[i][0], rows[i][2] + 1, parent.queue) for i in start]
        Event.objects.bulk_create(_make_ready(parent.run_id, tickets, now, actor))
        transaction.on_commit(lambda: dispatch(tickets))
        return
    if not all(status in STEP_FINAL for status in statuses):
        return
    result = _gather_items(rows, statuses, fan.on_item_failure)
    _conclude(parent, parent.attempt, result, StepStatus.WAITING, actor)


def _gather_items(
    rows: list[tuple[Any, ...]], statuses: list[StepStatus], policy: OnFailure
) -> StepResult:
    """The items' outputs in order, their errors by index."""
    errors = {
        str(i): (rows[i][5] or status.value)
        for i, status in enumerate(statuses)
        if status != StepStatus.SUCCEEDED
    }
    output = {
        "results": [
            row[4] if statuses[i] == StepStatus.SUCCEEDED else None for i, row in enumerate(rows)
        ],
        "items": [row[3] for row in rows],
        "count": len(rows),
        "errors": errors,
    }
    failed = [i for i, status in enumerate(statuses) if status == StepStatus.FAILED]
    if failed and policy == OnFailure.FAIL:
        first = failed[0]
        return StepResult.failure(
            f"{len(failed)} of {len(rows)} items failed; item {first}: {rows[first][5]}",
            output=output,
            retryable=False,
        )
    return StepResult.success(output)


def expand_for_each(over: Mapping[str, Any]) -> list[Any]:
    """Items of a rendered for_each: one array gives its elements; several, their product.

    With a single name `item` (the shorthand), an item is the element itself; with names, an item
    is a mapping of name to element.
    """
    for name, values in over.items():
        if not isinstance(values, list):
            raise ValueError(f"for_each '{name}' must be an array, got {type(values).__name__}")
    if list(over) == ["item"]:
        return list(over["item"])
    names = list(over)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*over.values())]


# --- subflows ---------------------------------------------------------------------------------


def _start_child(step: StepRun, data: Mapping[str, Any]) -> Run:
    """Start the child run of a subflow step, in the caller's transaction."""
    from flows.language.inputs import InputError

    parent_run = step.run
    name = data["workflow"]
    workflow = Workflow.objects.filter(name=name).select_related("latest_version").first()
    if workflow is None:
        raise _CannotWait(f"sub-workflow '{name}' does not exist")
    version = workflow.latest_version
    if data.get("version") is not None:
        version = WorkflowVersion.objects.filter(workflow=workflow, number=data["version"]).first()
        if version is None:
            raise _CannotWait(f"sub-workflow '{name}' has no version {data['version']}")
    if version is None:
        raise _CannotWait(f"sub-workflow '{name}' has no published version")
    depth = parent_run.depth + 1
    if depth > MAX_SUBFLOW_DEPTH:
        chain = " -> ".join([*_ancestry(parent_run), name])
        raise _CannotWait(
            f"sub-workflow depth limit ({MAX_SUBFLOW_DEPTH}) exceeded: {chain}"
            + (" (a recursive definition)" if name in _ancestry(parent_run) else "")
        )
    try:
        return start_run(
            workflow,
            data.get("input", {}),
            version=version,
            actor=f"run:{parent_run.pk}",
            source="subflow",
            parent_step=step,
            depth=depth,
        )
    except InputError as exc:
        raise _CannotWait(f"input for sub-workflow '{name}' is invalid: {exc}") from None


def _ancestry(run: Run) -> list[str]:
    """Workflow names from the top run down to `run`."""
    names: list[str] = []
    current: Run | None = run
    while current is not None:
        names.append(current.version.definition["name"])
        current = current.parent_step.run if current.parent_step_id else None
    return names[::-1]


def complete_subflow(step_id: int, child_id: Any, *, actor: str = "system") -> bool:
    """A child run ended: end its subflow step with the child's output or error."""
    step = StepRun.objects.filter(pk=step_id, status=StepStatus.WAITING).first()
    child = Run.objects.filter(pk=child_id).first()
    if step is None or child is None or not RunStatus(child.status).is_final:
        return False
    waiting = step.waiting or {}
    if waiting.get("kind") != "subflow" or waiting.get("data", {}).get("run") != str(child.pk):
        return False
    name = child.version.definition["name"] if child.version_id else "?"
    if child.status == RunStatus.SUCCEEDED:
        result = StepResult.success(child.output or {})
    elif child.status == RunStatus.CANCELLED:
        result = StepResult.failure(f"sub-workflow '{name}' was cancelled", retryable=False)
    else:
        result = StepResult.failure(f"sub-workflow '{name}' failed: {child.error}")
    return resume(step_id, step.attempt, result, actor=actor)


# --- approvals --------------------------------------------------------------------------------

APPROVAL_KINDS = ("approval", "gate")


class ApprovalDataError(InputError):
    """The answers given with an approval do not fit its form (400)."""


def gate_approved(step: StepRun) -> bool:
    """Whether the gate before this step was approved (it is asked once, not per retry)."""
    return Approval.objects.filter(
        step_run_id=step.pk, kind="gate", status__in=["decided", "expired"], decision="approve"
    ).exists()


def _open_approval(step: StepRun, attempt: int, wait: Wait) -> Approval:
    data = wait.data
    return Approval.objects.create(
        run_id=step.run_id,
        step_run_id=step.pk,
        attempt=attempt,
        kind=wait.kind,
        approvers=data.get("approvers") or {},
        message=data.get("message") or "",
        form=data.get("form"),
        default=data.get("default") or "reject",
        expires_at=wait.until,
    )


def _named(approvers: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The users, groups and permissions an approval names (each may be empty)."""
    return (
        approvers.get("users") or [],
        approvers.get("groups") or [],
        approvers.get("permissions") or [],
    )


def _may_decide_unnamed(user: Any) -> bool:
    """Whether `user` decides every approval that names nobody, whatever its workflow."""
    return user.is_staff or user.has_perm("runs.decide_approval")


def can_decide(user: Any, approvers: Mapping[str, Any], workflow_id: int | None = None) -> bool:
    """Named users, group members and permission holders; with none named, staff, holders of
    runs.decide_approval and of an `approve` grant on the workflow. Superusers always."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    users, groups, perms = _named(approvers)
    if not (users or groups or perms):
        from flows import access  # flows.access reads approvals through this module

        return _may_decide_unnamed(user) or (
            workflow_id is not None and access.allowed(user, "approve", workflow_id)
        )
    return (
        user.get_username() in users
        or (bool(groups) and user.groups.filter(name__in=groups).exists())
        or any(user.has_perm(perm) for perm in perms)
    )


def decidable(approvals: QuerySet[Approval], user: Any) -> QuerySet[Approval]:
    """`approvals` narrowed, in SQL, to those `user` may decide (the rule of can_decide).

    Only the distinct approver lists among `approvals` are read (one per approval step, not one
    per approval); each is judged once, and the rows are then matched by it, so paging and
    counting stay in the database. A list naming nobody goes by the workflow: an `approve`
    grant on it is enough.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return approvals.none()
    if user.is_superuser:
        return approvals
    lists = approvals.order_by().values_list("approvers", flat=True).distinct()
    group_names = set(user.groups.values_list("name", flat=True))
    named, unnamed = [], []
    for approvers in lists:
        users, groups, perms = _named(approvers)
        if not (users or groups or perms):
            unnamed.append(approvers)
        elif (
            user.get_username() in users
            or group_names.intersection(groups)
            or any(user.has_perm(perm) for perm in perms)
        ):
            named.append(approvers)
    mine = Q(approvers__in=named)
    if unnamed:
        from flows import access

        granted = (
            access.EVERY if _may_decide_unnamed(user) else access.workflow_ids(user, "approve")
        )
        if granted is access.EVERY:
            mine |= Q(approvers__in=unnamed)
        else:
            mine |= Q(approvers__in=unnamed, run__workflow_id__in=granted)
    return approvals.filter(mine)


class NotAnApprover(Exception):
    """The user may not decide this approval (403)."""


def decide(
    run: Run,
    step_name: str,
    decision: str,
    *,
    user: Any,
    comment: str = "",
    data: Any = None,
    actor: str | None = None,
) -> Approval:
    """Approve or reject the pending approval of `step_name`. Of concurrent decisions exactly one
    wins; the others raise InvalidTransition (409) and change nothing."""
    if decision not in ("approve", "reject"):
        raise ApprovalDataError(Problem("decision", "must be approve or reject"))
    with transaction.atomic():
        _lock_run(run.pk)
        approval = (
            Approval.objects.select_related("step_run__run__version")
            .filter(run_id=run.pk, step_run__name=step_name, status="pending")
            .first()
        )
        if approval is None:
            raise InvalidTransition(f"step '{step_name}' of run {run.pk} has no pending approval")
        if not can_decide(user, approval.approvers, run.workflow_id):
            raise NotAnApprover(f"you are not one of the approvers of step '{step_name}'")
        if decision == "approve" and approval.form:
            try:
                data = prepare_input(approval.form, data)
            except InputError as exc:
                raise ApprovalDataError(
                    [
                        Problem("data" + p.path.removeprefix("input"), p.message)
                        for p in exc.problems
                    ]
                ) from None
        _apply_decision(
            approval.step_run,
            approval,
            decision,
            user=user,
            comment=comment,
            data=data,
            actor=actor or f"user:{user.get_username()}",
        )
    approval.refresh_from_db()
    return approval


def _apply_decision(
    step: StepRun,
    approval: Approval,
    decision: str,
    *,
    actor: str,
    user: Any = None,
    comment: str = "",
    data: Any = None,
    expired: bool = False,
) -> None:
    """Record the decision and move the step on. The caller holds the run's lock."""
    now = timezone.now()
    won = Approval.objects.filter(pk=approval.pk, status="pending").update(
        status="expired" if expired else "decided",
        decision=decision,
        decided_by=user,
        decided_at=now,
        comment=comment,
        data=data,
    )
    if not won:
        raise InvalidTransition(f"the approval of step '{step.name}' was already decided")
    by = user.get_username() if user is not None else "timeout"
    Event.objects.create(
        run_id=step.run_id,
        step_run_id=step.pk,
        type="approval.expired" if expired else "approval.decided",
        actor=actor,
        data={"decision": decision, "by": by, "comment": comment, "kind": approval.kind},
    )
    attempt = approval.attempt
    if decision == "reject":
        reason = f"rejected by {by}" + (f": {comment}" if comment else "")
        _conclude(
            step, attempt, StepResult.failure(reason, retryable=False), StepStatus.WAITING, actor
        )
    elif approval.kind == "approval":
        output = {"decision": decision, "by": by, "comment": comment, "data": data}
        _conclude(step, attempt, StepResult.success(output), StepStatus.WAITING, actor)
    else:  # an approved gate: the step itself now runs
        ticket = (step.pk, attempt + 1, step.queue)
        moved = StepRun.objects.filter(
            pk=step.pk, status=StepStatus.WAITING, attempt=attempt
        ).update(
            status=StepStatus.READY,
            attempt=F("attempt") + 1,
            dispatched_at=now,
            waiting=None,
            next_attempt_at=None,
            deferrals=F("deferrals") + 1,  # the gate's wait is not a counted attempt
        )
        if moved:
            Event.objects.create(
                run_id=step.run_id,
                step_run_id=step.pk,
                type="step.ready",
                actor=actor,
                data={"attempt": attempt + 1},
            )
            transaction.on_commit(lambda: dispatch([ticket]))


# --- pause, resume, deadlines -----------------------------------------------------------------


def pause_run(run: Run, *, actor: str = "system") -> Run:
    """Nothing new starts (ready steps are held back); running steps finish."""
    with transaction.atomic():
        _lock_run(run.pk)
        won = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.PAUSED
        )
        run.refresh_from_db()
        if not won:
            raise InvalidTransition(f"run {run.pk} is {run.status}, not running")
        Event.objects.create(
            run_id=run.pk, workflow_id=run.workflow_id, type="run.paused", actor=actor
        )
    return run


def resume_run(run: Run, *, actor: str = "system") -> Run:
    """Start what the pause held back: ready steps are sent again, and the run is planned anew."""
    now = timezone.now()
    with transaction.atomic():
        _lock_run(run.pk)
        won = Run.objects.filter(pk=run.pk, status=RunStatus.PAUSED).update(
            status=RunStatus.RUNNING
        )
        run.refresh_from_db()
        if not won:
            raise InvalidTransition(f"run {run.pk} is {run.status}, not paused")
        Event.objects.create(
            run_id=run.pk, workflow_id=run.workflow_id, type="run.resumed", actor=actor
        )
        ready = list(
            StepRun.objects.filter(run=run, status=StepStatus.READY).values_list(
                "pk", "attempt", "queue"
            )
        )
        StepRun.objects.filter(run=run, status=StepStatus.READY).update(dispatched_at=now)
        if ready:
            transaction.on_commit(lambda: dispatch(ready))
        _advance(run, run.version.spec, _step_states(run.pk), now, actor)
    return run


def pause_workflow(workflow: Workflow, *, actor: str = "system") -> Workflow:
    """New runs queue; queued runs wait. Runs already going are not paused (pause those one by one)."""
    return _set_paused(workflow, True, actor)


def resume_workflow(workflow: Workflow, *, actor: str = "system") -> Workflow:
    _set_paused(workflow, False, actor)
    admit_queued(workflow.pk, actor=actor)
    return workflow


def _set_paused(workflow: Workflow, paused: bool, actor: str) -> Workflow:
    """Flip `paused` if it is not already so (else InvalidTransition), with its event."""
    with transaction.atomic():
        won = Workflow.objects.filter(pk=workflow.pk, paused=not paused).update(paused=paused)
        if not won:
            state = "already paused" if paused else "not paused"
            raise InvalidTransition(f"workflow '{workflow.name}' is {state}")
        kind = "workflow.paused" if paused else "workflow.resumed"
        Event.objects.create(workflow=workflow, type=kind, actor=actor)
    workflow.paused = paused
    return workflow


def expire_run(run_id: Any, now: datetime) -> bool:
    """A run past its deadline fails: what is open is cancelled, children too."""
    run = Run.objects.filter(
        pk=run_id, status__in=[RunStatus.RUNNING, RunStatus.PAUSED], deadline_at__lte=now
    ).first()
    if run is None:
        return False
    spec = run.version.spec
    _close_run(
        run,
        RunStatus.FAILED,
        actor="timer",
        reason=f"the run's deadline ({spec.deadline:g}s after its start) passed",
    )
    return True


def settle(run_id: Any, *, actor: str = "sweeper") -> bool:
    """Plan a running run again; ends it if all its steps ended (a crash between two commits
    cannot leave it running for ever)."""
    with transaction.atomic():
        _lock_run(run_id)
        run = Run.objects.select_related("version").get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return False
        before = run.status
        _advance(run, run.version.spec, _step_states(run_id), timezone.now(), actor)
        return run.status != before


# --- callbacks --------------------------------------------------------------------------------


def issue_callback(step: StepRun, attempt: int, expires_at: datetime) -> str:
    """A single-use token for this attempt; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    Callback.objects.create(
        token_hash=_token_hash(token), step_run=step, attempt=attempt, expires_at=expires_at
    )
    return token


def callback_url(token: str) -> str:
    return f"{settings.FURROW['PUBLIC_URL'].rstrip('/')}/api/v1/callbacks/{token}"


def deliver_callback(token: str, result: StepResult, *, actor: str = "callback") -> StepRun:
    """Complete the waiting attempt `token` belongs to. Raises CallbackRejected, changing nothing."""
    found = (
        Callback.objects.filter(token_hash=_token_hash(token))
        .values_list("pk", "step_run__run_id")
        .first()
    )
    if found is None:
        raise CallbackRejected("unknown callback token", gone=False)
    pk, run_id = found
    now = timezone.now()
    with transaction.atomic():
        _lock_run(run_id)
        callback = Callback.objects.select_related("step_run__run__version").get(pk=pk)
        step = callback.step_run
        if callback.used_at is not None:
            raise CallbackRejected("this callback token was already used", gone=True)
        if callback.expires_at <= now:
            raise CallbackRejected("this callback token has expired", gone=True)
        if step.attempt != callback.attempt or step.status not in (
            StepStatus.RUNNING,
            StepStatus.WAITING,
        ):
            raise CallbackRejected(
                f"step '{step.name}' is no longer waiting for this callback ({step.status})",
                gone=True,
            )
        Callback.objects.filter(pk=pk).update(used_at=now, result=result.as_json())
        Event.objects.create(
            run_id=run_id,
            step_run_id=step.pk,
            type="step.callback",
            actor=actor,
            data={"attempt": callback.attempt, "ok": result.ok},
        )
        if step.status == StepStatus.WAITING:
            _conclude(step, callback.attempt, result, StepStatus.WAITING, actor)
    return step


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- cancel -----------------------------------------------------------------------------------


def cancel_run(run: Run, *, actor: str = "system", reason: str = "") -> Run:
    """Cancel a run that has not ended: every step not yet final, and its child runs, too.

    Running attempts are fenced out: their heartbeat is refused, so the worker stops them (a shell
    step's process group is killed), and their results no longer match a running step.
    """
    return _close_run(run, RunStatus.CANCELLED, actor=actor, reason=reason)


def _close_run(run: Run, outcome: RunStatus, *, actor: str, reason: str) -> Run:
    now = timezone.now()
    with transaction.atomic():
        _lock_run(run.pk)
        run.refresh_from_db()
        if RunStatus(run.status).is_final:
            raise InvalidTransition(f"run {run.pk} already ended ({run.status})")
        open_rows = list(
            StepRun.objects.filter(run=run)
            .exclude(status__in=[s.value for s in STEP_FINAL])
            .values_list("pk", "status", "name", "attempt", "worker")
        )
        open_steps = [row[0] for row in open_rows]
        running = [
            (name, attempt)
            for _, status, name, attempt, worker in open_rows
            if status == StepStatus.RUNNING and on_this_host(worker)
        ]
        if running:
            # The worker stops them through its heartbeat; if it died, nobody else would.
            run_id = str(run.pk)
            transaction.on_commit(
                lambda: [kill_step_processes(run_id, name, attempt) for name, attempt in running]
            )
        StepRun.objects.filter(pk__in=open_steps).update(
            status=StepStatus.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
            next_attempt_at=None,
        )
        Event.objects.bulk_create(
            Event(run_id=run.pk, step_run_id=pk, type="step.cancelled", actor=actor)
            for pk in open_steps
        )
        Approval.objects.filter(run=run, status="pending").update(status="dropped")
        error = reason or str(outcome)
        Run.objects.filter(pk=run.pk).update(status=outcome, finished_at=now, error=error)
        run.status, run.finished_at, run.error = outcome, now, error
        Event.objects.create(
            run_id=run.pk,
            workflow_id=run.workflow_id,
            type=f"run.{outcome}",
            actor=actor,
            data={"reason": reason} if reason else {},
        )
        children = Run.objects.filter(parent_step__run=run).exclude(
            status__in=[
                s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
            ]
        )
        for child in children:
            cancel_run(child, actor=actor, reason=f"parent run {run.pk} ended ({outcome})")
        if run.parent_step_id is not None:
            parent_step_id, child_id = run.parent_step_id, run.pk
            transaction.on_commit(lambda: complete_subflow(parent_step_id, child_id))
        workflow_id = run.workflow_id
        transaction.on_commit(lambda: admit_queued(workflow_id, actor="system"))
    return run


def _finish_run(
    run: Run, spec: WorkflowSpec, outcome: RunStatus, now: datetime, actor: str
) -> None:
    rows = StepRun.objects.filter(run=run, item_of__isnull=True).values_list(
        "name", "status", "output", "error"
    )
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
    if run.parent_step_id is not None:
        parent_step_id, child_id = run.parent_step_id, run.pk
        transaction.on_commit(lambda: complete_subflow(parent_step_id, child_id))
    workflow_id = run.workflow_id
    transaction.on_commit(lambda: admit_queued(workflow_id, actor="system"))
