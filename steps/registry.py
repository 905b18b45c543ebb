"""The step types Furrow knows. The only place a step `type` from a definition becomes code.

Types map to classes through the explicit tuple below, never through an import path or a name
found in a workflow definition, so a definition cannot make the worker load arbitrary code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steps.executors.base import Executor
from steps.executors.http import HttpExecutor
from steps.executors.noop import NoopExecutor
from steps.executors.shell import ShellExecutor

EXECUTOR_CLASSES: tuple[type[Executor], ...] = (NoopExecutor, ShellExecutor, HttpExecutor)


class UnknownStepType(LookupError):
    def __init__(self, type_name: str, known: Iterable[str]) -> None:
        self.type_name = type_name
        self.known = sorted(known)
        super().__init__(f"unknown step type {type_name!r}; known types: {', '.join(self.known)}")


class DuplicateStepType(ValueError):
    pass


def build_registry(classes: Iterable[type[Executor]]) -> dict[str, Executor]:
    """One instance per type; raises DuplicateStepType if two classes claim the same type."""
    registry: dict[str, Executor] = {}
    for cls in classes:
        if cls.type in registry:
            raise DuplicateStepType(
                f"step type {cls.type!r} is registered by both "
                f"{type(registry[cls.type]).__name__} and {cls.__name__}"
            )
        registry[cls.type] = cls()
    return registry


EXECUTORS: dict[str, Executor] = build_registry(EXECUTOR_CLASSES)


def get_executor(type_name: str) -> Executor:
    try:
        return EXECUTORS[type_name]
    except KeyError:
        raise UnknownStepType(type_name, EXECUTORS) from None


def step_type_schemas() -> dict[str, dict[str, Any]]:
    """Type -> JSON Schema of its `with`, for validating definitions at publish time."""
    return {type_name: executor.config_schema for type_name, executor in EXECUTORS.items()}
