"""What becomes ready, what is skipped, and whether a run is over."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flows.language.spec import OnFailure, WorkflowSpec
from runs.engine.states import STEP_FINAL, RunStatus, StepStatus


@dataclass(frozen=True)
class Graph:
    order: tuple[str, ...]
    """Topological: each step after all it needs."""
    needs: Mapping[str, tuple[str, ...]]
    tolerated: frozenset[str]
    """Steps whose failure does not fail the run (`on_failure: continue`)."""

    @classmethod
    def from_spec(cls, spec: WorkflowSpec) -> Graph:
        return cls(
            order=tuple(step.name for step in spec.steps),
            needs={step.name: step.needs for step in spec.steps},
            tolerated=frozenset(s.name for s in spec.steps if s.on_failure == OnFailure.CONTINUE),
        )


@dataclass(frozen=True)
class Plan:
    """What should happen next for one run. Applying it is someone else's job."""

    to_ready: tuple[str, ...]
    to_skip: tuple[str, ...]
    outcome: RunStatus | None
    """The run's final status once every step is final, else None."""


def plan_next(graph: Graph, statuses: Mapping[str, StepStatus]) -> Plan:
    """Decide from the steps' statuses; skipping cascades through the whole graph in one call."""
    current = dict(statuses)
    to_ready: list[str] = []
    to_skip: list[str] = []
    for name in graph.order:
        if current[name] != StepStatus.PENDING:
            continue
        parents = [current[parent] for parent in graph.needs[name]]
        if any(
            _blocks(graph, parent, status)
            for parent, status in zip(graph.needs[name], parents, strict=True)
        ):
            current[name] = StepStatus.SKIPPED
            to_skip.append(name)
        elif all(
            _satisfies(graph, parent, status)
            for parent, status in zip(graph.needs[name], parents, strict=True)
        ):
            current[name] = StepStatus.READY
            to_ready.append(name)
    return Plan(tuple(to_ready), tuple(to_skip), run_outcome(graph, current))


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


def _satisfies(graph: Graph, parent: str, status: StepStatus) -> bool:
    return status == StepStatus.SUCCEEDED or (
        status == StepStatus.FAILED and parent in graph.tolerated
    )


def _blocks(graph: Graph, parent: str, status: StepStatus) -> bool:
    """A parent in this state means the step can never run."""
    if status == StepStatus.FAILED:
        return parent not in graph.tolerated
    return status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
