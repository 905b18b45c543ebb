"""The step types Furrow knows. The only place a step `type` from a definition becomes code.

Types map to classes through the explicit tuple below, never through an import path or a name
found in a workflow definition, so a definition cannot make the worker load arbitrary code.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from flows.language.validate import Checks
from steps import lua
from steps.connectors import connector_executor, connector_types
from steps.executors import condition, transform
from steps.executors.approval import ApprovalExecutor
from steps.executors.base import Executor
from steps.executors.condition import ConditionExecutor
from steps.executors.delay import DelayExecutor
from steps.executors.http import HttpExecutor
from steps.executors.http_async import HttpAsyncExecutor
from steps.executors.noop import NoopExecutor
from steps.executors.script import ScriptExecutor
from steps.executors.shell import ShellExecutor
from steps.executors.subflow import SubflowExecutor
from steps.executors.transform import TransformExecutor

EXECUTOR_CLASSES: tuple[type[Executor], ...] = (
    NoopExecutor,
    ShellExecutor,
    HttpExecutor,
    HttpAsyncExecutor,
    ScriptExecutor,
    TransformExecutor,
    ConditionExecutor,
    DelayExecutor,
    SubflowExecutor,
    ApprovalExecutor,
)


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
    executor = EXECUTORS.get(type_name)
    if executor is None and "." in type_name:
        executor = connector_executor(type_name)
    if executor is None:
        # Connectors are named in the message only for a dotted name: listing them needs the
        # database, and a plain typo ("shel") is far more likely a built-in.
        raise UnknownStepType(
            type_name, [*EXECUTORS, *connector_types()] if "." in type_name else EXECUTORS
        )
    return executor


def builtin_schemas() -> dict[str, dict[str, Any]]:
    """The built-in types' schemas only: no database needed (connectors live there)."""
    return {type_name: executor.config_schema for type_name, executor in EXECUTORS.items()}


def step_type_schemas() -> dict[str, dict[str, Any]]:
    """Type -> JSON Schema of its `with`, for validating definitions at publish time.

    Connector operations (`web.search`) are included: they come from settings and the admin.
    """
    return {**connector_types(), **builtin_schemas()}


def step_types() -> list[dict[str, Any]]:
    """What `GET /api/v1/step-types` lists: each type with its description and schema."""
    listed = [
        {
            "type": type_name,
            "description": executor.description,
            "kind": "builtin",
            "config_schema": executor.config_schema,
        }
        for type_name, executor in EXECUTORS.items()
    ]
    for type_name, schema in connector_types().items():
        executor = connector_executor(type_name)
        listed.append(
            {
                "type": type_name,
                "description": getattr(executor, "description", ""),
                "kind": "connector",
                "config_schema": schema,
            }
        )
    return sorted(listed, key=lambda entry: entry["type"])


def _script_problems(config: Any) -> list[tuple[str, str]]:
    source = config.get("lua", config.get("source"))
    if not isinstance(source, str) or "{{" in source:
        return []
    error = lua.check_syntax(source)
    return [("lua" if "lua" in config else "source", error)] if error else []


LANGUAGE_CHECKS = Checks(
    config={
        "transform": transform.check_config,
        "condition": condition.check_config,
        "script": _script_problems,
    },
    lua=partial(lua.check_syntax, predicate=True),
    raw_keys={
        type_name: frozenset(getattr(executor, "raw_keys", ()))
        for type_name, executor in EXECUTORS.items()
        if getattr(executor, "raw_keys", None)
    },
)
"""The checks publishing runs beyond each type's schema: expressions and Lua that must compile."""
