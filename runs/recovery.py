"""Recovering from failure: requeue or discard dead letters, and rerun a run.

A rerun is a new run linked to the old one (`rerun_of`): what succeeded before is carried over
(its output reused, a `step.reused` event says so), the rest runs again. History is never
rewritten. A requeued dead letter is the exception that reopens its own run, in place, with
events saying who reopened it and what was reset.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flows.language.graph import ancestors
from flows.language.inputs import prepare_input
from runs.engine.states import RunStatus, StepStatus
from runs.models import DeadLetter, Event, Run, StepRun
from runs.services import (
    InvalidTransition,
    _create_run,
    _has_room,
    _lock_run,
    _lock_workflow,
)
from steps.dispatch import dispatch


def requeue_dead_letter(letter: DeadLetter, *, user: Any = None, actor: str = "system") -> Run:
    """Run the dead-lettered step again, with a fresh set of attempts; reopen its run if it ended.

    Steps that were skipped because it failed become pending again.
    """
    now = timezone.now()
    with transaction.atomic():
        _lock_run(letter.run_id)
        run = Run.objects.select_related("version").get(pk=letter.run_id)
        if run.status == RunStatus.CANCELLED:
            raise InvalidTransition(f"run {run.pk} was cancelled; rerun it instead")
        reopening = RunStatus(run.status).is_final
        if reopening:
            _lock_workflow(run.workflow)
            if not _has_room(run.workflow, run.version.spec, now):
                raise InvalidTransition(
                    f"workflow '{run.workflow.name}' is paused or at its max_runs; "
                    "requeue when it has room"
                )
        won = DeadLetter.objects.filter(pk=letter.pk, status="open").update(
            status="requeued", resolved_by=user, resolved_at=now
        )
        if not won:
            letter.refresh_from_db()
            raise InvalidTransition(f"dead letter {letter.pk} was already {letter.status}")
        step = StepRun.objects.get(pk=letter.step_run_id)
        if step.status != StepStatus.FAILED:
            raise InvalidTransition(f"step '{step.name}' is {step.status}, not failed")
        spec = run.version.spec
        needs = spec.needs
        below = [name for name in needs if step.name in ancestors(needs, name)]
        reset = list(
            StepRun.objects.filter(
                run=run, name__in=below, status=StepStatus.SKIPPED, item_of__isnull=True
            ).values_list("pk", flat=True)
        )
        StepRun.objects.filter(pk__in=reset).update(status=StepStatus.PENDING, finished_at=None)
        events = [
            Event(run_id=run.pk, step_run_id=pk, type="step.reset", actor=actor) for pk in reset
        ]
        if reopening:
            spec_deadline = run.version.spec.deadline
            Run.objects.filter(pk=run.pk).update(
                status=RunStatus.RUNNING,
                finished_at=None,
                error="",
                output=None,
                # A fresh deadline: the old one may be what failed the run.
                deadline_at=now + timedelta(seconds=spec_deadline) if spec_deadline else None,
            )
            run.status = RunStatus.RUNNING
            events.append(
                Event(
                    run_id=run.pk,
                    workflow_id=run.workflow_id,
                    type="run.running",
                    actor=actor,
                    data={"reopened_by": f"dead letter {letter.pk}"},
                )
            )
        ticket = (step.pk, step.attempt + 1, step.queue)
        StepRun.objects.filter(pk=step.pk).update(
            status=StepStatus.READY,
            attempt=F("attempt") + 1,
            deferrals=F("attempt"),  # the retry policy counts afresh from here
            dispatched_at=now,
            finished_at=None,
            error="",
        )
        events.append(
            Event(
                run_id=run.pk,
                step_run_id=step.pk,
                type="step.ready",
                actor=actor,
                data={"attempt": ticket[1], "requeued": letter.pk},
            )
        )
        Event.objects.bulk_create(events)
        transaction.on_commit(lambda: dispatch([ticket]))
    return run


def discard_dead_letter(letter: DeadLetter, *, user: Any = None, actor: str = "system") -> None:
    with transaction.atomic():
        won = DeadLetter.objects.filter(pk=letter.pk, status="open").update(
            status="discarded", resolved_by=user, resolved_at=timezone.now()
        )
        if not won:
            letter.refresh_from_db()
            raise InvalidTransition(f"dead letter {letter.pk} was already {letter.status}")
        Event.objects.create(
            run_id=letter.run_id,
            step_run_id=letter.step_run_id,
            type="step.dead_letter_discarded",
            actor=actor,
            data={"dead_letter": letter.pk},
        )


def rerun(
    run: Run,
    *,
    from_step: str | None = None,
    only_step: str | None = None,
    input: Any = None,
    user: Any = None,
    actor: str = "system",
) -> Run:
    """A new run of the same version that keeps what succeeded.

    By default the failed, cancelled and skipped steps run again. `from_step` runs that step and
    everything after it again (with `input`, if given, replacing the run input); `only_step`
    replays that one step alone, keeping every other step's outcome (Planter's phase rerun).
    """
    if not RunStatus(run.status).is_final:
        raise InvalidTransition(f"run {run.pk} is {run.status}; only an ended run can be rerun")
    if from_step and only_step:
        raise InvalidTransition("give from_step or only_step, not both")
    spec = run.version.spec
    names = {s.name for s in spec.steps}
    for chosen in (from_step, only_step):
        if chosen is not None and chosen not in names:
            raise InvalidTransition(f"run {run.pk} has no step '{chosen}'")
    prepared = prepare_input(spec.input_schema, input) if input is not None else run.input
    rows = StepRun.objects.filter(run=run, item_of__isnull=True).values_list(
        "name", "status", "output", "error"
    )
    old = {name: (status, output) for name, status, output, _ in rows}
    old_errors = {name: error for name, _, _, error in rows}
    if from_step is not None:
        again = {from_step} | {n for n in names if from_step in ancestors(spec.needs, n)}
    elif only_step is not None:
        again = {only_step}
    else:
        again = {n for n, (status, _) in old.items() if status != StepStatus.SUCCEEDED}
    if only_step is not None:
        # Planter's phase rerun: every other step keeps its outcome, whatever it was.
        keep = {n for n in names - again if StepStatus(old[n][0]).is_final}
    else:
        keep = {n for n in names - again if old.get(n, ("",))[0] == StepStatus.SUCCEEDED}
    now = timezone.now()
    with transaction.atomic():
        new = _create_run(
            run.workflow,
            run.version,
            prepared,
            user,
            actor,
            "rerun",
            None,
            run.depth,
            "",
            run.priority,
            hold=True,
        )
        Run.objects.filter(pk=new.pk).update(rerun_of=run)
        new.rerun_of = run
        kept = list(StepRun.objects.filter(run=new, name__in=keep))
        for step in kept:
            step.status, step.output = old[step.name]
            step.error, step.finished_at = old_errors[step.name], now
        StepRun.objects.bulk_update(kept, ["status", "output", "error", "finished_at"])
        Event.objects.bulk_create(
            Event(
                run_id=new.pk,
                step_run_id=step.pk,
                type="step.reused",
                actor=actor,
                data={"from_run": str(run.pk), "status": step.status},
            )
            for step in kept
        )
        Event.objects.create(
            run_id=run.pk,
            workflow_id=run.workflow_id,
            type="run.rerun",
            actor=actor,
            data={"rerun": str(new.pk), "from_step": from_step, "only_step": only_step},
        )
        _release(new, actor)
    new.refresh_from_db()
    return new


def _release(run: Run, actor: str) -> None:
    """Start a held rerun now if its workflow has room; else it waits in the queue."""
    from runs.services import _begin

    now = timezone.now()
    _lock_workflow(run.workflow)
    if _has_room(run.workflow, run.version.spec, now):
        _begin(run, run.version.spec, now, actor)
