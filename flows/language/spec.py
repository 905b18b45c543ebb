"""A compiled workflow: the frozen shape the engine and the workers read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Backoff(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class OnFailure(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


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
    when: str | bool | None
    on_failure: OnFailure
    position: int
    """Index in a topological order of the workflow's steps."""


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    steps: tuple[StepSpec, ...]
    """In topological order: every step comes after all it needs."""
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
