"""Rebuild a run's and its steps' states from the event log alone, and compare them with the rows.

Spuds kept no state but its log; Furrow keeps both, and this module is the check that they agree:
every transition in runs/services.py appends an Event, so replaying a run's events in id order
must land every step on the status and attempt its StepRun row holds. A difference is either a
transition that wrote no event or a row changed behind the services' back.

Pure: plain event records in, a plain state out; the caller loads the rows (runs/verify.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from runs.engine.states import RunStatus, StepStatus

TRANSITIONS: Mapping[str, str | None] = {
    # Run events (_create_run, _begin, pause_run, resume_run, _finish_run, _close_run).
    "run.queued": RunStatus.QUEUED,
    "run.running": RunStatus.RUNNING,
    "run.succeeded": RunStatus.SUCCEEDED,
    "run.failed": RunStatus.FAILED,
    "run.cancelled": RunStatus.CANCELLED,
    "run.paused": RunStatus.PAUSED,
    "run.resumed": RunStatus.RUNNING,
    # Step events (_make_ready, retry_due, _apply_decision, claim, _park, _conclude, skip,
    # _advance, _close_run).
    "step.ready": StepStatus.READY,
    "step.running": StepStatus.RUNNING,
    "step.waiting": StepStatus.WAITING,
    "step.retrying": StepStatus.RETRYING,
    # A deferred attempt (rate limit, open circuit) is put back as retrying, its number kept.
    "step.deferred": StepStatus.RETRYING,
    "step.succeeded": StepStatus.SUCCEEDED,
    "step.failed": StepStatus.FAILED,
    "step.skipped": StepStatus.SKIPPED,
    "step.cancelled": StepStatus.CANCELLED,
    # A rerun carries a succeeded step over from the old run; a requeued dead letter resets the
    # steps skipped because of it (runs.recovery).
    "step.reused": StepStatus.SUCCEEDED,
    "step.reset": StepStatus.PENDING,
    # Records beside a transition, not transitions: deliver_callback, a step's hooks, and an
    # approval's decision (_apply_decision writes the step's own event after it).
    "step.callback": None,
    "step.hook": None,
    "approval.decided": None,
    "approval.expired": None,
    "step.dead_lettered": None,
    "step.dead_letter_discarded": None,
    "run.rerun": None,
}
"""Event type -> the status it leaves its run (`run.*`) or its step (others) in; None: unchanged.

The one place to teach the replay a new event type; any type missing here is ignored and reported
in `Replayed.unknown_types`.
"""


@dataclass(frozen=True)
class EventRecord:
    """One Event row as plain data: `step` is its StepRun's name, None for a run event."""

    id: int
    type: str
    step: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class StepState:
    status: str
    attempt: int = 0


@dataclass(frozen=True)
class State:
    """A run's status and its steps' states by name (items as `name[i]`)."""

    run_status: str | None
    steps: dict[str, StepState]


@dataclass(frozen=True)
class Replayed(State):
    """The state the events describe, and the event types the replay did not know."""

    unknown_types: frozenset[str] = field(default_factory=frozenset)


_PENDING = StepState(StepStatus.PENDING, 0)


def replay(events: Iterable[EventRecord], steps: Sequence[str]) -> Replayed:
    """Apply `events` in id order to a run whose definition has `steps`, all pending at attempt 0.

    Step events naming a step the definition (or an earlier items event) did not create are
    ignored: the row they point at then shows up in `diff` as one no event accounts for.
    """
    run_status: str | None = None
    states = dict.fromkeys(steps, _PENDING)
    unknown: set[str] = set()
    for event in sorted(events, key=lambda e: e.id):
        if event.type not in TRANSITIONS:
            unknown.add(event.type)
        elif event.type.startswith("run."):
            run_status = TRANSITIONS[event.type] or run_status
        elif event.step is not None and event.step in states:
            states[event.step] = _apply(states[event.step], event)
            states.update(_items_created(event))
    return Replayed(run_status, states, frozenset(unknown))


def _apply(state: StepState, event: EventRecord) -> StepState:
    status = TRANSITIONS[event.type] or state.status
    if event.type == "step.reused":  # a rerun copies the old outcome, given in the event
        status = event.data.get("status", status)
    attempt = event.data.get("attempt", state.attempt)
    return replace(state, status=status, attempt=attempt)


def _items_created(event: EventRecord) -> dict[str, StepState]:
    """A for_each step waiting on `count` items: its rows `name[0]`… exist from here, pending."""
    if event.type != "step.waiting" or event.data.get("kind") != "items":
        return {}
    count = event.data.get("count")
    if not isinstance(count, int):
        return {}
    return {f"{event.step}[{index}]": _PENDING for index in range(count)}


def diff(replayed: State, actual: State) -> list[str]:
    """What differs between the replayed state and the rows' (`actual`), one sentence each.

    The run first, then steps in the replay's order, then rows the replay does not know.
    """
    differences = []
    if replayed.run_status != actual.run_status:
        said = replayed.run_status or "nothing (no run event)"
        differences.append(f"run: events say {said}, row says {actual.run_status}")
    for name, state in replayed.steps.items():
        row = actual.steps.get(name)
        if row is None:
            differences.append(f"step '{name}': events say {_shown(state)}, but there is no row")
        elif row != state:
            differences.append(f"step '{name}': events say {_shown(state)}, row says {_shown(row)}")
    differences += [
        f"step '{name}': row says {_shown(row)}, but neither the definition nor an event created it"
        for name, row in actual.steps.items()
        if name not in replayed.steps
    ]
    return differences


def _shown(state: StepState) -> str:
    return f"{state.status} (attempt {state.attempt})"
