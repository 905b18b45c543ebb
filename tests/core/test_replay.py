"""Rebuilding states from events (runs/engine/replay.py): each event type, for_each items, unknown
types, the difference messages, and a property test against a small state machine that restates
the transitions of runs/services.py independently of the replay's table.
"""

from __future__ import annotations

from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs.engine.replay import TRANSITIONS, EventRecord, Replayed, State, StepState, diff, replay
from runs.engine.states import RunStatus, StepStatus


def events(*specs: tuple) -> list[EventRecord]:
    """Records with increasing ids from (type, step, data) tuples; data may be left out."""
    ids = count(1)
    return [
        EventRecord(next(ids), spec[0], spec[1], spec[2] if len(spec) > 2 else {}) for spec in specs
    ]


def state(status: str, attempt: int = 0) -> StepState:
    return StepState(status, attempt)


# Run events


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ([], None),
        (["run.queued"], "queued"),
        (["run.queued", "run.running"], "running"),
        (["run.queued", "run.running", "run.succeeded"], "succeeded"),
        (["run.queued", "run.running", "run.failed"], "failed"),
        (["run.queued", "run.running", "run.cancelled"], "cancelled"),
        (["run.queued", "run.running", "run.paused"], "paused"),
        (["run.queued", "run.running", "run.paused", "run.resumed"], "running"),
    ],
)
def test_run_events_set_the_run_status(types, expected):
    replayed = replay(events(*[(t, None) for t in types]), ["a"])
    assert replayed.run_status == expected
    assert replayed.steps == {"a": state("pending")}


# Step events


@pytest.mark.parametrize(
    ("before", "event", "data", "after"),
    [
        (state("pending"), "step.ready", {"attempt": 1}, state("ready", 1)),
        (state("retrying", 1), "step.ready", {"attempt": 2}, state("ready", 2)),
        (state("ready", 1), "step.running", {"attempt": 1}, state("running", 1)),
        (state("running", 1), "step.waiting", {"attempt": 1, "kind": "timer"}, state("waiting", 1)),
        (state("running", 1), "step.retrying", {"attempt": 1, "retry_in": 2}, state("retrying", 1)),
        (state("running", 2), "step.deferred", {"attempt": 2, "retry_in": 1}, state("retrying", 2)),
        (state("running", 3), "step.succeeded", {"attempt": 3}, state("succeeded", 3)),
        (state("waiting", 1), "step.succeeded", {"attempt": 1}, state("succeeded", 1)),
        (state("running", 1), "step.failed", {"attempt": 1}, state("failed", 1)),
        (state("running", 1), "step.skipped", {"reason": "when is false"}, state("skipped", 1)),
        (state("pending"), "step.skipped", {"reason": "a step it needs failed"}, state("skipped")),
        (state("waiting", 2), "step.cancelled", {}, state("cancelled", 2)),
        (state("pending"), "step.cancelled", {}, state("cancelled")),
        (state("waiting", 1), "step.callback", {"attempt": 1, "ok": True}, state("waiting", 1)),
        (state("running", 1), "step.callback", {"attempt": 1, "ok": True}, state("running", 1)),
        (state("failed", 1), "step.hook", {"hook": "on_failure"}, state("failed", 1)),
        (state("waiting", 1), "approval.decided", {"decision": "approve"}, state("waiting", 1)),
        (state("waiting", 1), "approval.expired", {"decision": "reject"}, state("waiting", 1)),
        (state("waiting", 1), "step.ready", {"attempt": 2}, state("ready", 2)),  # a gate approved
    ],
)
def test_each_step_event_moves_the_step(before, event, data, after):
    history = [("step.ready", "a", {"attempt": before.attempt})] if before.attempt else []
    # Bring the step to `before` first, whatever it is, with events the replay already trusts.
    setup = history + ([(f"step.{before.status}", "a", {})] if before.status != "pending" else [])
    replayed = replay(events(*setup, (event, "a", data)), ["a"])
    assert replayed.steps["a"] == after
    assert replayed.unknown_types == frozenset()


def test_steps_without_events_are_pending_at_attempt_0():
    replayed = replay(events(("step.ready", "a", {"attempt": 1})), ["a", "b"])
    assert replayed.steps == {"a": state("ready", 1), "b": state("pending")}


def test_an_event_without_an_attempt_keeps_the_previous_one():
    replayed = replay(
        events(("step.ready", "a", {"attempt": 3}), ("step.cancelled", "a", {})), ["a"]
    )
    assert replayed.steps["a"] == state("cancelled", 3)


def test_events_are_applied_in_id_order_whatever_order_they_come_in():
    replayed = replay(
        [
            EventRecord(2, "step.running", "a", {"attempt": 1}),
            EventRecord(1, "step.ready", "a", {"attempt": 1}),
        ],
        ["a"],
    )
    assert replayed.steps["a"] == state("running", 1)


def test_the_table_knows_every_step_and_run_status():
    statuses = {status for status in TRANSITIONS.values() if status is not None}
    assert set(StepStatus) - {StepStatus.PENDING} <= statuses
    assert set(RunStatus) <= statuses


# for_each items


def test_a_waiting_items_event_creates_pending_items_that_then_follow_their_own_events():
    replayed = replay(
        events(
            ("step.ready", "each", {"attempt": 1}),
            ("step.running", "each", {"attempt": 1}),
            ("step.waiting", "each", {"attempt": 1, "kind": "items", "count": 3}),
            ("step.ready", "each[0]", {"attempt": 1}),
            ("step.running", "each[0]", {"attempt": 1}),
            ("step.succeeded", "each[0]", {"attempt": 1}),
            ("step.ready", "each[1]", {"attempt": 1}),
        ),
        ["each", "after"],
    )
    assert replayed.steps == {
        "each": state("waiting", 1),
        "after": state("pending"),
        "each[0]": state("succeeded", 1),
        "each[1]": state("ready", 1),
        "each[2]": state("pending"),
    }


@pytest.mark.parametrize(
    "data",
    [
        {"attempt": 1, "kind": "items", "count": 0},
        {"attempt": 1, "kind": "timer", "count": 2},
        {"attempt": 1, "kind": "items"},
        {"attempt": 1, "kind": "items", "count": "2"},
    ],
)
def test_only_a_waiting_event_for_a_number_of_items_creates_items(data):
    replayed = replay(events(("step.waiting", "each", data)), ["each"])
    assert replayed.steps == {"each": state("waiting", 1)}


def test_an_item_event_before_its_items_exist_is_ignored():
    replayed = replay(events(("step.ready", "each[0]", {"attempt": 1})), ["each"])
    assert replayed.steps == {"each": state("pending")}


# Unknown types


def test_unknown_event_types_change_nothing_and_are_reported():
    replayed = replay(
        events(
            ("run.queued", None),
            ("run.rewound", None),
            ("step.ready", "a", {"attempt": 1}),
            ("step.paused", "a", {"attempt": 7}),
            ("step.paused", "a", {"attempt": 8}),
            ("workflow.published", None),
        ),
        ["a"],
    )
    assert replayed.run_status == "queued"
    assert replayed.steps == {"a": state("ready", 1)}
    assert replayed.unknown_types == {"run.rewound", "step.paused", "workflow.published"}


def test_a_step_event_for_a_step_the_definition_lacks_is_ignored():
    replayed = replay(events(("step.ready", "ghost", {"attempt": 1})), ["a"])
    assert replayed.steps == {"a": state("pending")}
    assert replayed.unknown_types == frozenset()


# Differences


def test_matching_states_have_no_differences():
    same = State("succeeded", {"a": state("succeeded", 2)})
    assert diff(Replayed(same.run_status, dict(same.steps)), same) == []


def test_differences_name_the_run_and_each_step_with_status_and_attempt():
    replayed = State(
        "running",
        {"build": state("succeeded", 2), "test": state("ready", 1), "gone": state("pending")},
    )
    actual = State(
        "failed",
        {"build": state("failed", 2), "test": state("ready", 2), "extra[0]": state("skipped")},
    )
    assert diff(replayed, actual) == [
        "run: events say running, row says failed",
        "step 'build': events say succeeded (attempt 2), row says failed (attempt 2)",
        "step 'test': events say ready (attempt 1), row says ready (attempt 2)",
        "step 'gone': events say pending (attempt 0), but there is no row",
        "step 'extra[0]': row says skipped (attempt 0), but neither the definition nor an event "
        "created it",
    ]


def test_a_run_without_run_events_is_a_difference():
    assert diff(State(None, {}), State("running", {})) == [
        "run: events say nothing (no run event), row says running"
    ]


# Property: the replay agrees with a state machine driven by valid transitions

# What services.py may do to a step in each status: (event type, new status, attempt change).
# "next" is a new attempt (the event carries it), "same" the current one (carried), None not
# carried. Restated from services.py, not derived from the replay's table.
MOVES: dict[str, list[tuple[str, str, str | None]]] = {
    "pending": [("step.ready", "ready", "next"), ("step.skipped", "skipped", None)],
    "ready": [("step.running", "running", "same")],
    "running": [
        ("step.succeeded", "succeeded", "same"),
        ("step.failed", "failed", "same"),
        ("step.retrying", "retrying", "same"),
        ("step.deferred", "retrying", "same"),
        ("step.waiting", "waiting", "same"),
        ("step.skipped", "skipped", None),
        ("step.callback", "running", "same"),
    ],
    "waiting": [
        ("step.succeeded", "succeeded", "same"),
        ("step.failed", "failed", "same"),
        ("step.retrying", "retrying", "same"),
        ("step.callback", "waiting", "same"),
        ("approval.decided", "waiting", None),
        ("step.ready", "ready", "next"),  # an approved gate: the step itself runs next
    ],
    "retrying": [("step.ready", "ready", "next")],
    "succeeded": [("step.hook", "succeeded", None)],
    "failed": [("step.hook", "failed", None)],
    "skipped": [],
    "cancelled": [],
}
FINAL_STEP = {"succeeded", "failed", "skipped", "cancelled"}


@st.composite
def histories(draw):
    """A random valid history: events, the step names of the definition, the expected state."""
    names = [f"s{i}" for i in range(draw(st.integers(1, 4)))]
    expected = dict.fromkeys(names, ("pending", 0))
    fan_out = draw(st.sampled_from([None, *names]))  # at most one for_each step
    log: list[tuple[str, str | None, dict]] = [("run.queued", None, {}), ("run.running", None, {})]
    for _ in range(draw(st.integers(0, 40))):
        name = draw(st.sampled_from(sorted(expected)))
        status, attempt = expected[name]
        moves = [
            *MOVES[status],
            *([("step.cancelled", "cancelled", None)] if status not in FINAL_STEP else []),
        ]
        if not moves:
            continue
        event, after, carried = draw(st.sampled_from(moves))
        attempt += carried == "next"
        data = {"attempt": attempt} if carried else {}
        if event == "step.waiting" and name == fan_out and not any("[" in n for n in expected):
            items = draw(st.integers(0, 3))
            data |= {"kind": "items", "count": items}
            log.append((event, name, data))
            expected[name] = (after, attempt)
            expected |= {f"{name}[{i}]": ("pending", 0) for i in range(items)}
            continue
        if event == "step.waiting":
            data["kind"] = draw(st.sampled_from(["timer", "callback", "subflow", "approval"]))
        log.append((event, name, data))
        expected[name] = (after, attempt)
        if draw(st.integers(0, 9)) == 0:  # a pause changes no step
            log += [("run.paused", None, {}), ("run.resumed", None, {})]
    final = draw(st.sampled_from([None, "succeeded", "failed", "cancelled"]))
    if final:
        log.append((f"run.{final}", None, {}))
    return events(*log), names, final or "running", expected


@settings(max_examples=300, deadline=None)
@given(histories())
def test_replaying_a_valid_history_gives_the_machines_final_state(history):
    log, names, run_status, expected = history

    replayed = replay(log, names)

    assert replayed.run_status == run_status
    assert {name: (s.status, s.attempt) for name, s in replayed.steps.items()} == expected
    assert replayed.unknown_types == frozenset()
    assert diff(replayed, State(run_status, {n: StepState(*v) for n, v in expected.items()})) == []
