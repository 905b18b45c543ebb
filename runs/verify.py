"""Check that a run's rows agree with its event log (runs/engine/replay.py does the replaying).

Read-only: loads a run's events and rows, replays the events and lists what differs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from runs.engine.replay import EventRecord, Replayed, State, StepState, diff, replay
from runs.models import Event, Run, StepRun


@dataclass(frozen=True)
class Verdict:
    """One run's check: the differences (empty when rows and events agree) and the event types
    the replay did not know (reported, but not differences: if one changed a state, the
    difference shows anyway)."""

    run_id: uuid.UUID
    differences: list[str]
    unknown_types: frozenset[str]


def check_run(run: Run) -> Verdict:
    """Replay `run`'s events and compare them with its Run and StepRun rows as stored now."""
    replayed = replay_events(run)
    return Verdict(run.pk, diff(replayed, stored_state(run)), replayed.unknown_types)


def verify_run(run: Run) -> list[str]:
    """The differences between `run`'s event log and its rows; empty when they agree."""
    return check_run(run).differences


def verify_all(runs: Iterable[Run]) -> dict[uuid.UUID, list[str]]:
    """`verify_run` for each run, by run id."""
    return {run.pk: verify_run(run) for run in runs}


def replay_events(run: Run) -> Replayed:
    # One query with the step names joined in; the definition gives the steps every run starts with.
    rows = (
        Event.objects.filter(run_id=run.pk)
        .order_by("id")
        .values_list("id", "type", "step_run__name", "data")
    )
    events = [EventRecord(pk, type_, step, data or {}) for pk, type_, step, data in rows]
    return replay(events, [step.name for step in run.version.spec.steps])


def stored_state(run: Run) -> State:
    # Read afresh rather than trust `run`: the caller's object may be older than the rows.
    status = Run.objects.values_list("status", flat=True).get(pk=run.pk)
    steps = StepRun.objects.filter(run_id=run.pk).order_by("position", "pk")
    return State(
        status,
        {
            name: StepState(s, attempt)
            for name, s, attempt in steps.values_list("name", "status", "attempt")
        },
    )
