"""The `script` step type: config, what becomes the output, and how failures are reported."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from steps.executors.base import StepContext, StepResult
from steps.executors.script import ScriptExecutor

SCHEMA = ScriptExecutor.config_schema


def run(
    config: dict[str, Any],
    *,
    input: Any = None,
    timeout: float = 10,
    log: Any = None,
    cancel: threading.Event | None = None,
) -> StepResult:
    ctx = StepContext(
        run_id="run-1",
        step_name="transform",
        attempt=1,
        config=config,
        timeout=timeout,
        input=input,
        log=log or (lambda stream, text: None),
        cancel=cancel or threading.Event(),
    )
    return ScriptExecutor().run(ctx)


def test_the_config_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(
    "config",
    [
        {"lua": "return 1"},
        {"source": "return 1"},
        {"lua": "return 1", "language": "lua"},
        {"lua": "return input", "input": {"any": ["json", 1]}},
        {"lua": "return 1", "instruction_limit": 1000, "memory_mb": 512},
    ],
)
def test_the_schema_accepts_valid_configs(config):
    assert list(Draft202012Validator(SCHEMA).iter_errors(config)) == []


@pytest.mark.parametrize(
    "config",
    [
        {"lua": "return 1", "language": "ale"},
        {},
        {"lua": "return 1", "source": "return 2"},
        {"lua": ""},
        {"lua": "return 1", "instruction_limit": 999},
        {"lua": "return 1", "instruction_limit": 1_000_000_001},
        {"lua": "return 1", "memory_mb": 0},
        {"lua": "return 1", "memory_mb": 513},
        {"lua": "return 1", "timeout": 5},
    ],
)
def test_the_schema_refuses_invalid_configs(config):
    assert list(Draft202012Validator(SCHEMA).iter_errors(config)) != []


def test_the_ale_language_is_refused_with_a_message_naming_lua():
    result = run({"lua": "return 1", "language": "ale"})
    assert not result.ok
    assert result.error == "invalid config at language: 'ale' is not one of ['lua']"
    assert result.retryable is False


@pytest.mark.parametrize("config", [{}, {"lua": "return 1", "source": "return 2"}])
def test_exactly_one_of_lua_or_source_is_required(config):
    result = run(config)
    assert not result.ok
    assert result.error == (
        "invalid config: set exactly one of lua or source (the script's Lua source)"
    )


def test_a_returned_table_is_the_output():
    result = run({"lua": "return {total = input.a + input.b}"}, input={"a": 1, "b": 2})
    assert result == StepResult.success({"total": 3})


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ("return 42", {"result": 42}),
        ("return 'done'", {"result": "done"}),
        ("return {1, 2}", {"result": [1, 2]}),
        ("return nil", {"result": None}),
        ("return false", {"result": False}),
    ],
)
def test_any_other_value_becomes_result(source, output):
    assert run({"lua": source}).output == output


def test_source_is_an_alias_of_lua():
    assert run({"source": "return {ok = true}"}).output == {"ok": True}


def test_the_engine_input_is_used_when_the_config_has_none():
    result = run({"lua": 'return {active = status == "active"}'}, input={"status": "active"})
    assert result.output == {"active": True}


def test_the_config_input_replaces_the_engine_input():
    result = run({"lua": "return {n = n}", "input": {"n": 7}}, input={"n": 1})
    assert result.output == {"n": 7}


def test_a_list_input_is_bound_as_input():
    assert run({"lua": "return #input"}, input=[1, 2, 3]).output == {"result": 3}


def test_a_script_error_fails_the_step_without_retrying():
    result = run({"lua": "local a = 1\nreturn a.b"})
    assert not result.ok
    assert result.error == "script error at line 2: attempt to index a number value (local 'a')"
    assert result.retryable is False


def test_a_syntax_error_fails_the_step_without_retrying():
    result = run({"lua": "return ="})
    assert result.error == "syntax error at line 1: unexpected symbol near '='"
    assert result.retryable is False


def test_the_instruction_limit_from_the_config_applies():
    result = run({"lua": "while true do end", "instruction_limit": 5000})
    assert result.error == "script exceeded its instruction budget of 5,000 instructions"
    assert result.retryable is False


def test_the_memory_limit_from_the_config_applies():
    result = run({"lua": "local s = 'x' while true do s = s .. s end", "memory_mb": 4})
    assert result.error == "script exceeded its memory limit of 4 MB"
    assert result.retryable is False


def test_the_step_timeout_is_a_wall_clock_limit_and_may_be_retried():
    result = run({"lua": "while true do end", "instruction_limit": 1_000_000_000}, timeout=0.2)
    assert result.error == "script exceeded its time limit of 0.2s"
    assert result.retryable is True


def test_a_cancelled_step_stops():
    cancel = threading.Event()
    result = run(
        {"lua": "print('go') while true do end", "instruction_limit": 1_000_000_000},
        log=lambda stream, text: cancel.set(),
        cancel=cancel,
    )
    assert result.error == "script was cancelled"


def test_print_goes_to_the_step_log():
    lines: list[tuple[str, str]] = []
    run({"lua": "print('n =', 3) return {}"}, log=lambda stream, text: lines.append((stream, text)))
    assert lines == [("stdout", "n =\t3")]
