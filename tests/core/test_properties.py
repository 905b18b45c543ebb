"""Property tests: random DAGs, compiled like real definitions, executed in random orders."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.language.graph import ancestors, find_cycle, topological_order
from flows.language.validate import compile_definition, validate
from runs.engine.plan import Graph, plan_next
from runs.engine.states import STEP_FINAL, RunStatus, StepStatus
from steps.registry import builtin_schemas

SCHEMAS = builtin_schemas()
SETTINGS = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Dag:
    needs: dict[str, list[str]]
    """In declaration order, which is shuffled: not necessarily topological."""
    tolerated: frozenset[str]


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 25) -> Dag:
    n = draw(st.integers(min_value=1, max_value=max_steps))
    names = [f"s{i}" if i % 3 else f"step-{i}" for i in range(n)]  # some hyphenated names
    needs = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True) if i else st.just([]))
        for i, name in enumerate(names)
    }
    declared = draw(st.permutations(names))
    tolerated = draw(st.frozensets(st.sampled_from(names)))
    return Dag({name: needs[name] for name in declared}, tolerated)


def definition(dag: Dag) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for name, needs in dag.needs.items():
        step: dict[str, Any] = {"type": "noop", "needs": needs}
        if name in dag.tolerated:
            step["on_failure"] = "continue"
        if needs:  # read a parent's output, as real steps do, so template checks run too
            alias = needs[0].replace("-", "_")
            step["with"] = {"from": "{{ steps." + alias + ".output }}"}
        steps[name] = step
    return {"name": "random", "steps": steps}


@given(dags())
@SETTINGS
def test_topological_order_respects_every_edge(dag):
    order = topological_order(dag.needs)
    assert sorted(order) == sorted(dag.needs)
    position = {name: index for index, name in enumerate(order)}
    for name, needs in dag.needs.items():
        assert all(position[need] < position[name] for need in needs)
    assert find_cycle(dag.needs) is None


@given(dags(), st.data())
@settings(max_examples=100, deadline=None)  # validates whole definitions: the slow one
def test_a_back_edge_always_makes_a_cycle_that_find_cycle_reports(dag, data):
    descendant = data.draw(st.sampled_from(sorted(dag.needs)))
    ancestor = data.draw(st.sampled_from(sorted(ancestors(dag.needs, descendant) | {descendant})))
    needs = {name: list(deps) for name, deps in dag.needs.items()}
    needs[ancestor].append(descendant)  # the ancestor now needs its own descendant

    cycle = find_cycle(needs)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(set(cycle)) == len(cycle) - 1
    for step, need in pairwise(cycle):
        assert need in needs[step]

    doc = definition(Dag(needs, dag.tolerated))
    assert any("cycle: " in problem.message for problem in validate(doc, SCHEMAS))


@given(dags(), st.data())
@SETTINGS
def test_a_random_execution_respects_needs_ends_and_fails_only_for_intolerable_failures(dag, data):
    spec = compile_definition(definition(dag), SCHEMAS)
    assert [s.name for s in spec.steps] == topological_order(dag.needs)
    graph = Graph.from_spec(spec)
    status = dict.fromkeys(dag.needs, StepStatus.PENDING)
    started: list[str] = []
    outcome = None

    # Each step is started once and finished once: 2n actions, plus one plan per action.
    for _ in range(2 * len(status) + 1):
        plan = plan_next(graph, status)
        status.update(dict.fromkeys(plan.to_ready, StepStatus.READY))
        status.update(dict.fromkeys(plan.to_skip, StepStatus.SKIPPED))
        outcome = plan.outcome
        if outcome is not None:
            break
        ready = [name for name, s in status.items() if s == StepStatus.READY]
        running = [name for name, s in status.items() if s == StepStatus.RUNNING]
        assert ready or running, f"stuck: {status}"
        name = data.draw(st.sampled_from(ready + running))
        if status[name] == StepStatus.READY:
            # (a) a step starts only after all it needs has finished, and succeeded unless tolerated
            for need in graph.needs[name]:
                assert status[need] == StepStatus.SUCCEEDED or (
                    status[need] == StepStatus.FAILED and need in dag.tolerated
                )
            started.append(name)
            status[name] = StepStatus.RUNNING
        else:
            ok = data.draw(st.booleans())
            status[name] = StepStatus.SUCCEEDED if ok else StepStatus.FAILED

    # (b) the run ends
    assert outcome is not None
    # (c) every step ends final; a step is skipped, and never started, exactly when a parent
    # failed intolerably or was skipped
    assert all(s in STEP_FINAL for s in status.values())
    for name, needs in dag.needs.items():
        blocked = any(
            status[need] == StepStatus.SKIPPED
            or (status[need] == StepStatus.FAILED and need not in dag.tolerated)
            for need in needs
        )
        assert (status[name] == StepStatus.SKIPPED) is blocked
        assert (name in started) is not blocked
    assert len(started) == len(set(started))
    # (d) the run failed iff some step failed without on_failure: continue
    intolerable = any(
        s == StepStatus.FAILED and name not in dag.tolerated for name, s in status.items()
    )
    assert (outcome == RunStatus.FAILED) is intolerable
    assert outcome in (RunStatus.FAILED, RunStatus.SUCCEEDED)
