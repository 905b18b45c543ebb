"""A compiled workflow: the frozen shape the engine and the workers read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_QUEUE = "default"
"""The queue of a step that names none; the cluster `manage.py serve` starts serves it."""


class Backoff(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class OnFailure(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


class Join(StrEnum):
    """When a step with several parents runs, given how they ended (Airflow's trigger rules)."""

    ALL_SUCCEEDED = "all_succeeded"
    """Every parent succeeded (the default); else the step is skipped."""
    ALL_DONE = "all_done"
    """Every parent ended, however it ended."""
    ANY_SUCCEEDED = "any_succeeded"
    """Every parent ended and at least one succeeded."""
    NONE_FAILED = "none_failed"
    """Every parent ended and none failed: skipped parents are fine."""


@dataclass(frozen=True)
class ForEach:
    """Run the step once per item: the cartesian product of the named arrays, in order."""

    over: Mapping[str, Any]
    """Name -> template (or literal array). A single unnamed array is named `item`."""
    parallelism: int
    on_item_failure: OnFailure
    """fail: one failed item fails the step; continue: the step succeeds with the errors listed."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    """Total attempts, the first included."""
    delay: float = 0.0
    backoff: Backoff = Backoff.FIXED
    max_delay: float | None = None
    jitter: float = 0.0
    """Fraction of each delay that is random: 0 none, 0.5 means between half and all of it."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    type: str
    needs: tuple[str, ...]
    config: Mapping[str, Any]
    retry: RetryPolicy
    timeout: float | None
    when: str | bool | Mapping[str, str] | None
    """A Jinja expression, a literal, or {"lua": source}."""
    on_failure: OnFailure
    position: int
    """Index in a topological order of the workflow's steps."""
    join: Join = Join.ALL_SUCCEEDED
    for_each: ForEach | None = None
    circuit_breaker: Mapping[str, Any] | None = None
    on_unhealthy: str | None = None
    requires_approval: Mapping[str, Any] | None = None
    """A gate before the step: who approves, message, form, default; None for no gate."""
    approval_timeout: float | None = None
    dead_letter: bool = False
    queue: str = DEFAULT_QUEUE
    """Only workers serving this queue run the step (Strøm's worker capabilities)."""
    hooks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """on_failure / on_success: {message, labels, run}; recorded as step.hook events."""


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    steps: tuple[StepSpec, ...]
    """In topological order: every step comes after all it needs."""
    max_runs: int | None = None
    max_parallel_steps: int | None = None
    priority: int = 5
    deadline: float | None = None
    """Seconds a run may take from its start."""
    _by_name: Mapping[str, StepSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {step.name: step for step in self.steps})

    def step(self, name: str) -> StepSpec:
        return self._by_name[name]

    @property
    def needs(self) -> dict[str, tuple[str, ...]]:
        return {step.name: step.needs for step in self.steps}

    def dependents(self, name: str) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps if name in step.needs)

    def sinks(self) -> tuple[str, ...]:
        """Steps nothing else needs: their outputs make the run's output."""
        needed = {need for step in self.steps for need in step.needs}
        return tuple(step.name for step in self.steps if step.name not in needed)
