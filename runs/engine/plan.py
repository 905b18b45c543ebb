"""What becomes ready, what is skipped, and whether a run is over."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from flows.language.spec import Join, OnFailure, WorkflowSpec
from runs.engine.states import STEP_FINAL, RunStatus, StepStatus


@dataclass(frozen=True)
class Graph:
    order: tuple[str, ...]
    """Topological: each step after all it needs."""
    needs: Mapping[str, tuple[str, ...]]
    tolerated: frozenset[str]
    """Steps whose failure does not fail the run (`on_failure: continue`)."""
    joins: Mapping[str, Join] = field(default_factory=dict)
    """Steps with a join rule other than all_succeeded."""

    @classmethod
    def from_spec(cls, spec: WorkflowSpec) -> Graph:
        return cls(
            order=tuple(step.name for step in spec.steps),
            needs={step.name: step.needs for step in spec.steps},
            tolerated=frozenset(s.name for s in spec.steps if s.on_failure == OnFailure.CONTINUE),
            joins={s.name: s.join for s in spec.steps if s.join != Join.ALL_SUCCEEDED},
        )


@dataclass(frozen=True)
class Plan:
    """What should happen next for one run. Applying it is someone else's job."""

    to_ready: tuple[str, ...]
    to_skip: tuple[str, ...]
    outcome: RunStatus | None
    """The run's final status once every step is final, else None."""
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Why each step in `to_skip` is skipped."""


def plan_next(
    graph: Graph,
    statuses: Mapping[str, StepStatus],
    chosen: Mapping[str, Collection[str]] | None = None,
) -> Plan:
    """Decide from the steps' statuses; skipping cascades through the whole graph in one call.

    `chosen` holds, for steps that chose their successors (a condition's branch), the successors
    they chose; an edge not chosen counts as a skipped parent for the step at its end.
    """
    current = dict(statuses)
    chosen = chosen or {}
    to_ready: list[str] = []
    to_skip: list[str] = []
    reasons: dict[str, str] = {}
    for name in graph.order:
        if current[name] != StepStatus.PENDING:
            continue
        edges = [
            (parent, _edge(current[parent], name, chosen.get(parent)))
            for parent in graph.needs[name]
        ]
        verdict = _verdict(graph, graph.joins.get(name, Join.ALL_SUCCEEDED), edges)
        if verdict is True:
            current[name] = StepStatus.READY
            to_ready.append(name)
        elif isinstance(verdict, str):
            current[name] = StepStatus.SKIPPED
            to_skip.append(name)
            reasons[name] = verdict
    return Plan(tuple(to_ready), tuple(to_skip), run_outcome(graph, current), reasons)


def run_outcome(graph: Graph, statuses: Mapping[str, StepStatus]) -> RunStatus | None:
    if not all(status in STEP_FINAL for status in statuses.values()):
        return None
    if any(status == StepStatus.CANCELLED for status in statuses.values()):
        return RunStatus.CANCELLED
    failed = any(
        status == StepStatus.FAILED and name not in graph.tolerated
        for name, status in statuses.items()
    )
    return RunStatus.FAILED if failed else RunStatus.SUCCEEDED


def _edge(
    parent_status: StepStatus, child: str, parent_chose: Collection[str] | None
) -> StepStatus:
    """The parent's status as the child sees it: a branch not taken looks like a skip."""
    if (
        parent_status == StepStatus.SUCCEEDED
        and parent_chose is not None
        and child not in parent_chose
    ):
        return StepStatus.SKIPPED
    return parent_status


def _verdict(graph: Graph, join: Join, edges: list[tuple[str, StepStatus]]) -> bool | str | None:
    """True: ready. A string: skipped, for that reason. None: not yet decidable."""
    if not edges:
        return True  # a root: every rule holds vacuously
    succeeded = [p for p, s in edges if _counts_as_success(graph, p, s)]
    failed = [p for p, s in edges if s == StepStatus.FAILED and p not in graph.tolerated]
    skipped = [p for p, s in edges if s == StepStatus.SKIPPED]
    cancelled = [p for p, s in edges if s == StepStatus.CANCELLED]
    done = all(s in STEP_FINAL for _, s in edges)
    if cancelled:
        return f"'{cancelled[0]}' was cancelled"
    if join == Join.ALL_SUCCEEDED:
        if failed:
            return f"'{failed[0]}' failed"
        if skipped:
            return f"'{skipped[0]}' was skipped or not chosen"
        return True if done else None
    if join == Join.NONE_FAILED:
        if failed:
            return f"'{failed[0]}' failed (join: none_failed)"
        return True if done else None
    if not done:
        return None
    if join == Join.ALL_DONE:
        return True
    # ANY_SUCCEEDED
    return True if succeeded else "no step it needs succeeded (join: any_succeeded)"


def _counts_as_success(graph: Graph, parent: str, status: StepStatus) -> bool:
    return status == StepStatus.SUCCEEDED or (
        status == StepStatus.FAILED and parent in graph.tolerated
    )
