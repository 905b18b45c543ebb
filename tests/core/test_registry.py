from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from steps.executors.base import StepContext
from steps.executors.noop import NoopExecutor
from steps.registry import (
    EXECUTOR_CLASSES,
    EXECUTORS,
    DuplicateStepType,
    UnknownStepType,
    build_registry,
    builtin_schemas,
    get_executor,
)


def test_every_executor_class_is_registered_under_its_own_unique_type():
    types = [cls.type for cls in EXECUTOR_CLASSES]
    assert len(types) == len(set(types))
    assert (
        set(EXECUTORS)
        == set(types)
        == {
            "approval",
            "noop",
            "shell",
            "http",
            "http_async",
            "script",
            "transform",
            "condition",
            "delay",
            "subflow",
        }
    )
    for type_name, executor in EXECUTORS.items():
        assert executor.type == type_name


@pytest.mark.parametrize("type_name", sorted(EXECUTORS))
def test_each_config_schema_is_a_valid_draft_2020_12_schema(type_name):
    Draft202012Validator.check_schema(builtin_schemas()[type_name])


def test_registering_the_same_type_twice_is_refused():
    with pytest.raises(DuplicateStepType, match="'noop'"):
        build_registry((NoopExecutor, NoopExecutor))


def test_get_executor_returns_the_registered_instance():
    assert get_executor("shell") is EXECUTORS["shell"]


def test_an_unknown_type_raises_a_lookup_error_naming_the_known_types():
    with pytest.raises(UnknownStepType) as excinfo:
        get_executor("python")
    assert isinstance(excinfo.value, LookupError)
    assert (
        str(excinfo.value)
        == "unknown step type 'python'; known types: approval, condition, delay, http, http_async, noop, script, shell, subflow, transform"
    )


def test_noop_returns_its_config_as_output():
    ctx = StepContext(run_id="r1", step_name="gate", attempt=1, config={"a": 1}, timeout=1)
    result = get_executor("noop").run(ctx)
    assert result.ok
    assert result.output == {"a": 1}
