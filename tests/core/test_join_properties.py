"""Property tests of branching and joins over random DAGs with random outcomes and branch choices.

Every run ends; a step becomes ready only when its join rule holds, and is skipped only when the
rule can no longer hold. The rules are restated here independently of runs/engine/plan.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.language.spec import Join
from runs.engine.plan import Graph, plan_next
from runs.engine.states import STEP_FINAL, RunStatus, StepStatus

OK, FAIL, SKIP = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED


@st.composite
def scenarios(draw):
    n = draw(st.integers(min_value=1, max_value=9))
    names = [f"s{i}" for i in range(n)]
    needs = {
        name: tuple(sorted(draw(st.sets(st.sampled_from(names[:i]), max_size=3)) if i else ()))
        for i, name in enumerate(names)
    }
    joins = {name: draw(st.sampled_from(list(Join))) for name in names}
    tolerated = frozenset(draw(st.sets(st.sampled_from(names), max_size=n)))
    outcomes = {name: draw(st.sampled_from([OK, OK, FAIL])) for name in names}
    children = {name: [c for c in names if name in needs[c]] for name in names}
    chosen = {
        name: frozenset(draw(st.sets(st.sampled_from(children[name]))))
        for name in names
        if children[name] and draw(st.booleans())
    }
    order = draw(st.permutations(names))
    return names, needs, joins, tolerated, outcomes, chosen, order


def edge(statuses, chosen, parent, child):
    status = statuses[parent]
    if status == OK and parent in chosen and child not in chosen[parent]:
        return SKIP
    return status


def rule_holds(join, edges, tolerated):
    """Whether the step may run, given final parent edges (None: undecided yet)."""
    if not edges:
        return True  # a step with no parents always runs
    good = [p for p, s in edges if s == OK or (s == FAIL and p in tolerated)]
    bad = [p for p, s in edges if s == FAIL and p not in tolerated]
    final = all(s in STEP_FINAL for _, s in edges)
    if not final:
        return None
    if join == Join.ALL_SUCCEEDED:
        return len(good) == len(edges)
    if join == Join.ALL_DONE:
        return True
    if join == Join.ANY_SUCCEEDED:
        return bool(good)
    return not bad  # NONE_FAILED


def simulate(scenario, check_plan=None):
    """Run the scenario through plan_next to its end; returns (statuses, choices, outcome).

    `check_plan(plan, statuses, choices)` sees each plan after its skips are applied.
    """
    names, needs, joins, tolerated, outcomes, chosen, order = scenario
    graph = Graph(
        order=tuple(names),
        needs=needs,
        tolerated=tolerated,
        joins={n: j for n, j in joins.items() if j != Join.ALL_SUCCEEDED},
    )
    statuses = dict.fromkeys(names, StepStatus.PENDING)
    made_choice: dict[str, frozenset[str]] = {}
    for _ in range(len(names) * 2 + 2):
        plan = plan_next(graph, statuses, made_choice)
        statuses.update(dict.fromkeys(plan.to_skip, SKIP))
        if check_plan is not None:
            check_plan(plan, statuses, made_choice)
        statuses.update(dict.fromkeys(plan.to_ready, StepStatus.READY))
        if plan.outcome is not None:
            return statuses, made_choice, plan.outcome
        ready = [n for n in order if statuses[n] == StepStatus.READY]
        assert ready, f"stuck with nothing ready: {statuses}"
        step = ready[0]
        statuses[step] = outcomes[step]
        if step in chosen and outcomes[step] == OK:
            made_choice[step] = chosen[step]
    raise AssertionError("the run did not end")


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_every_run_ends_and_no_step_runs_unless_its_rule_holds(scenario):
    _, needs, joins, tolerated, *_ = scenario

    def check(plan, statuses, choices):
        for name in plan.to_ready:
            edges = [(p, edge(statuses, choices, p, name)) for p in needs[name]]
            # Ready only when every parent has ended and the rule holds.
            assert rule_holds(joins[name], edges, tolerated) is True, (name, edges)
        for name in plan.to_skip:
            edges = [(p, edge(statuses, choices, p, name)) for p in needs[name]]
            # Skipped only when the rule cannot hold, whatever the unfinished parents do.
            assert rule_holds(joins[name], edges, tolerated) is not True, (name, edges)

    statuses, _, outcome = simulate(scenario, check)
    assert all(status in STEP_FINAL for status in statuses.values())
    failed = any(s == FAIL and n not in tolerated for n, s in statuses.items())
    assert outcome == (RunStatus.FAILED if failed else RunStatus.SUCCEEDED)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_step_whose_rule_would_hold_is_never_skipped(scenario):
    """Skips are exact: replaying the final statuses, each skipped step's rule is false."""
    names, needs, joins, tolerated, *_ = scenario
    statuses, made_choice, _ = simulate(scenario)
    for name in names:
        edges = [(p, edge(statuses, made_choice, p, name)) for p in needs[name]]
        holds = rule_holds(joins[name], edges, tolerated)
        if statuses[name] == SKIP:
            assert holds is False, (name, edges)
        else:
            assert holds is True, (name, edges)
