"""The condition step: compare one value, then choose which successors run."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from steps.executors.base import StepContext, StepResult
from steps.executors.condition import ConditionExecutor, check_config, json_equal

CONTEXT: dict[str, Any] = {
    "input": {"env": "prod", "replicas": 3, "flags": [], "dry_run": False, "note": None},
    "steps": {
        "check": {"output": {"status": 200, "items": ["a", "b"]}, "status": "succeeded"},
    },
    "run": {"id": "run-1"},
}


def run(config: dict[str, Any]) -> StepResult:
    ctx = StepContext(
        run_id="run-1",
        step_name="gate",
        attempt=1,
        config=config,
        timeout=5,
        context=CONTEXT,
    )
    return ConditionExecutor().run(ctx)


def passes(config: dict[str, Any]) -> bool:
    result = run(config)
    assert result.ok, result.error
    assert result.output is not None
    return result.output["result"]


# comparisons


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"value": "prod", "equals": "prod"}, True),
        ({"value": "dev", "equals": "prod"}, False),
        ({"value": 1, "equals": 1.0}, True),
        ({"value": 200, "equals": 200.0}, True),
        ({"value": 0.1 + 0.2, "equals": 0.3}, False),
        ({"value": True, "equals": 1}, False),
        ({"value": 0, "equals": False}, False),
        ({"value": "1", "equals": 1}, False),
        ({"value": None, "equals": None}, True),
        ({"value": [1, {"a": 2}], "equals": [1.0, {"a": 2.0}]}, True),
        ({"value": [1, True], "equals": [1, 1]}, False),
        ({"value": {"a": 1}, "equals": {"a": 1, "b": 2}}, False),
        ({"value": "dev", "not_equals": "prod"}, True),
        ({"value": 1, "not_equals": 1.0}, False),
        ({"value": "b", "in": ["a", "b"]}, True),
        ({"value": 2, "in": [1.0, 2.0]}, True),
        ({"value": "c", "in": ["a", "b"]}, False),
        ({"value": True, "in": [1]}, False),
        ({"value": "release-1.4", "matches": r"^release-\d+\.\d+$"}, True),
        ({"value": "hotfix", "matches": "^release"}, False),
        ({"value": "a release", "matches": "release"}, True),
        ({"value": 204, "matches": r"^2\d\d$"}, True),
        ({"value": True, "matches": "^true$"}, True),
    ],
)
def test_comparisons(config, expected):
    assert passes(config) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        (0, False),
        (0.0, False),
        (2, True),
        ("", False),
        ("false", True),
        ("0", True),
        ([], False),
        ([0], True),
        ({}, False),
        ({"a": 1}, True),
    ],
)
def test_without_a_comparison_the_value_is_judged_by_json_truthiness(value, expected):
    assert passes({"value": value}) is expected


def test_equals_takes_precedence_over_not_equals():
    assert passes({"value": "prod", "equals": "prod", "not_equals": "prod"}) is True
    assert passes({"value": "dev", "equals": "prod", "not_equals": "prod"}) is False


def test_json_equal_never_mixes_booleans_strings_and_numbers():
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(1, True)
    assert not json_equal("1", 1)
    assert not json_equal([1], {"0": 1})


# key


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"key": "input.env", "equals": "prod"}, True),
        ({"key": "steps.check.output.status", "equals": 200}, True),
        ({"key": "steps.check.output.items.1", "equals": "b"}, True),
        ({"key": "input.replicas", "in": [1, 2, 3]}, True),
        ({"key": "input.flags"}, False),
        ({"key": "input.note", "equals": None}, True),
    ],
)
def test_a_key_is_a_dotted_path_into_the_run_context(config, expected):
    assert passes(config) is expected


@pytest.mark.parametrize(
    "config",
    [
        {"key": "input.region", "equals": "eu"},
        {"key": "input.region", "not_equals": "eu"},
        {"key": "input.region", "equals": None},
        {"key": "input.region"},
        {"key": "steps.check.output.items.5", "not_equals": "x"},
        {"key": "input.env.length", "not_equals": 4},
    ],
)
def test_a_missing_key_makes_the_condition_false_whatever_the_comparison(config):
    result = run(config)
    assert result.ok
    assert result.output == {"result": False, "value": None, "branch": "else"}
    assert result.next == ()


# branching


def test_true_without_then_runs_every_successor():
    result = run({"key": "input.env", "equals": "prod"})
    assert result == StepResult(
        ok=True, output={"result": True, "value": "prod", "branch": "then"}, next=None
    )


def test_true_with_then_runs_the_then_steps():
    result = run(
        {"key": "input.env", "equals": "prod", "then": ["deploy", "notify"], "else": ["skip"]}
    )
    assert result.ok
    assert result.next == ("deploy", "notify")
    assert result.output == {"result": True, "value": "prod", "branch": "then"}


def test_false_with_else_runs_the_else_steps():
    result = run({"key": "input.env", "equals": "dev", "then": ["deploy"], "else": ["skip"]})
    assert result.ok
    assert result.next == ("skip",)
    assert result.output == {"result": False, "value": "prod", "branch": "else"}


def test_false_without_else_stops_by_default_so_no_successor_runs():
    for config in (
        {"value": 2, "equals": 3},
        {"value": 2, "equals": 3, "then": ["deploy"]},
        {"value": 2, "equals": 3, "on_false": "stop"},
    ):
        result = run(config)
        assert result.ok
        assert result.next == ()


def test_false_with_on_false_continue_runs_every_successor():
    result = run({"value": 2, "equals": 3, "on_false": "continue"})
    assert result.ok
    assert result.next is None
    assert result.output == {"result": False, "value": 2, "branch": "else"}


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            {"key": "input.env", "equals": "dev"},
            'condition failed: input.env is "prod", expected "dev"',
        ),
        (
            {"key": "input.env", "not_equals": "prod"},
            'condition failed: input.env is "prod", expected anything but "prod"',
        ),
        (
            {"key": "steps.check.output.status", "in": [201, 204]},
            "condition failed: steps.check.output.status is 200, expected one of [201, 204]",
        ),
        (
            {"value": "hotfix", "matches": "^release"},
            'condition failed: value is "hotfix", expected a match for /^release/',
        ),
        ({"value": []}, "condition failed: value is [], expected a true value"),
        ({"key": "input.region", "equals": "eu"}, "condition failed: input.region is missing"),
        (
            {"value": "x" * 200, "equals": "y"},
            f'condition failed: value is "{"x" * 96}..., expected "y"',
        ),
    ],
)
def test_false_with_on_false_fail_fails_the_step_describing_the_comparison(config, error):
    result = run({**config, "on_false": "fail"})
    assert not result.ok
    assert not result.retryable
    assert result.error == error
    assert result.output is not None
    assert result.output["result"] is False


# config


def test_the_config_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(ConditionExecutor.config_schema)
    assert ConditionExecutor.type == "condition"
    assert ConditionExecutor.shell_quoted == frozenset()


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"equals": 1},
        {"value": 1, "key": "input.env"},
        {"key": ""},
        {"key": 3},
        {"value": 1, "in": "abc"},
        {"value": 1, "matches": 3},
        {"value": 1, "equals": 1, "in": [1]},
        {"value": 1, "not_equals": 1, "matches": "1"},
        {"value": 1, "in": [1], "matches": "1"},
        {"value": 1, "then": "deploy"},
        {"value": 1, "then": ["a", "a"]},
        {"value": 1, "else": [""]},
        {"value": 1, "on_false": "skip"},
        {"value": 1, "else": ["b"], "on_false": "fail"},
        {"value": 1, "otherwise": ["b"]},
    ],
)
def test_the_schema_refuses_bad_configs(config):
    assert not Draft202012Validator(ConditionExecutor.config_schema).is_valid(config)


@pytest.mark.parametrize(
    "config",
    [
        {"value": 1, "equals": 1, "not_equals": 2},
        {"key": "input.env", "then": [], "else": ["b"]},
        {"value": None, "on_false": "continue"},
    ],
)
def test_the_schema_accepts_good_configs(config):
    assert Draft202012Validator(ConditionExecutor.config_schema).is_valid(config)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"equals": 1}, "invalid config: give exactly one of value, key"),
        ({"value": 1, "key": "a"}, "invalid config: give exactly one of value, key"),
        (
            {"value": 1, "equals": 1, "in": [1]},
            "invalid config: give at most one of equals/not_equals, in, matches (got equals, in)",
        ),
        (
            {"value": 1, "else": ["b"], "on_false": "fail"},
            "invalid config: on_false only applies without else",
        ),
        (
            {"value": 1, "on_false": "skip"},
            "invalid config at on_false: 'skip' is not one of ['stop', 'fail', 'continue']",
        ),
        ({"value": 1, "then": "deploy"}, "invalid config at then: 'deploy' is not of type 'array'"),
        (
            {"value": 1, "matches": "("},
            "invalid regex '(' in matches: missing ), unterminated subpattern at position 0",
        ),
    ],
)
def test_a_bad_config_fails_the_step_without_retry(config, error):
    result = run(config)
    assert not result.ok
    assert not result.retryable
    assert result.error == error


def test_check_config_reports_a_regex_that_does_not_compile():
    assert check_config({"value": 1, "matches": "[a-"}) == [
        ("matches", "invalid regex '[a-': unterminated character set at position 0")
    ]
    assert check_config({"value": 1, "matches": "^a"}) == []
    assert check_config({"value": 1, "matches": "{{ input.pattern }}"}) == []
    assert check_config({"value": 1}) == []
