"""The transform step: JMESPath, a template rendering JSON, and `set`, over plain data."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from steps.executors.base import StepContext, StepResult
from steps.executors.transform import TransformExecutor, check_config

ITEMS = [
    {"name": "pen", "price": 2},
    {"name": "lamp", "price": 35.5},
    {"name": "book", "price": 12},
]
CONTEXT: dict[str, Any] = {
    "input": {"currency": "EUR"},
    "steps": {
        "fetch": {"output": {"status": 200, "body": {"items": ITEMS}}, "status": "succeeded"}
    },
    "run": {"id": "run-1"},
}
EXPENSIVE = "steps.fetch.output.body.items[?price > `10`].name"


def run(config: dict[str, Any], parent: Any = None) -> StepResult:
    ctx = StepContext(
        run_id="run-1",
        step_name="shape",
        attempt=1,
        config=config,
        timeout=5,
        input=parent,
        context=CONTEXT,
    )
    return TransformExecutor().run(ctx)


def output(config: dict[str, Any], parent: Any = None) -> dict[str, Any]:
    result = run(config, parent)
    assert result.ok, result.error
    assert result.output is not None
    return result.output


def failure(config: dict[str, Any], parent: Any = None) -> str:
    result = run(config, parent)
    assert not result.ok
    assert not result.retryable
    assert result.error is not None
    return result.error


# JMESPath


def test_jmespath_filters_the_run_context_and_wraps_a_list_in_result():
    assert output({"jmespath": EXPENSIVE}) == {"result": ["lamp", "book"]}


def test_jmespath_that_yields_an_object_makes_it_the_output():
    assert output(
        {"jmespath": "{count: length(steps.fetch.output.body.items), cur: input.currency}"}
    ) == {
        "count": 3,
        "cur": "EUR",
    }


def test_jmespath_sees_the_step_input_as_parent():
    assert output({"jmespath": "parent.total"}, parent={"total": 7}) == {"result": 7}


def test_jmespath_queries_data_instead_of_the_context_when_data_is_given():
    assert output({"jmespath": "[].id", "data": [{"id": 1}, {"id": 2}]}) == {"result": [1, 2]}
    assert output({"jmespath": "steps", "data": {"other": 1}}) == {"result": None}


def test_a_missing_field_gives_a_null_result():
    assert output({"jmespath": "steps.nope.output"}) == {"result": None}


def test_a_jmespath_syntax_error_names_the_expression():
    assert failure({"jmespath": "items[?price >"}) == (
        "invalid JMESPath expression 'items[?price >': incomplete expression"
    )
    assert failure({"jmespath": "a.b)"}) == (
        "invalid JMESPath expression 'a.b)': Unexpected token: ) at column 3"
    )


def test_a_jmespath_error_met_only_at_search_time_names_the_expression():
    assert failure({"jmespath": "nosuch(input)"}) == (
        "JMESPath expression 'nosuch(input)' failed: Unknown function: nosuch()"
    )
    assert failure({"jmespath": "sum(input.currency)"}).startswith(
        "JMESPath expression 'sum(input.currency)' failed: In function sum(), invalid type"
    )


# Templates


def test_a_template_renders_json_from_the_jmespath_result_and_the_context():
    template = """{
      "names": {{ result | tojson }},
      "count": {{ result | length }},
      "currency": "{{ input.currency }}",
      "first": {{ steps.fetch.output.body["items"][0] | tojson }}
    }"""
    assert output({"jmespath": EXPENSIVE, "template": template}) == {
        "names": ["lamp", "book"],
        "count": 2,
        "currency": "EUR",
        "first": {"name": "pen", "price": 2},
    }


def test_a_template_can_loop_and_read_data_and_parent():
    template = (
        '{"ids": [{% for row in data %}{{ row.id }}{% if not loop.last %}, {% endif %}{% endfor %}],'
        ' "from": {{ parent | tojson }}}'
    )
    assert output({"template": template, "data": [{"id": 4}, {"id": 5}]}, parent="fetch") == {
        "ids": [4, 5],
        "from": "fetch",
    }


def test_a_template_that_renders_a_scalar_or_a_list_is_wrapped_in_result():
    assert output({"template": "{{ 6 * 7 }}"}) == {"result": 42}
    assert output({"template": "[1, 2.5, null]"}) == {"result": [1, 2.5, None]}
    assert output({"template": "{{ data }}", "data": ["x"]}) == {"result": ["x"]}


def test_a_template_that_is_one_expression_keeps_the_value_it_names():
    assert output({"template": "{{ steps.fetch.output.body }}"}) == {"items": ITEMS}


def test_an_undefined_name_in_a_template_fails_without_retry():
    assert (
        failure({"template": '{"a": {{ nope }}}'})
        == "template: template error: 'nope' is undefined"
    )


def test_result_and_data_are_only_defined_when_given():
    assert (
        failure({"template": "{{ result }}"}) == "template: template error: 'result' is undefined"
    )
    assert failure({"template": "{{ data }}"}) == "template: template error: 'data' is undefined"


def test_a_template_is_sandboxed():
    assert "unsafe" in failure({"template": '{{ "".__class__.__mro__ }}'})


def test_text_that_is_not_json_fails_with_line_column_and_the_rendered_text():
    error = failure({"template": '{\n  "currency": {{ input.currency }}\n}'})
    assert error == (
        "template did not render JSON: Expecting value at line 2 column 15; "
        "rendered text begins '{\\n  \"currency\": EUR\\n}'"
    )


def test_only_the_first_200_characters_of_bad_json_are_quoted():
    error = failure({"template": "x" * 500})
    assert error.endswith(f"rendered text begins {'x' * 200!r}")


def test_nan_and_values_that_are_not_json_are_refused():
    assert (
        failure({"template": '{"a": NaN}'})
        == "template did not render JSON: NaN is not a JSON value"
    )
    assert failure({"template": "{{ range(3) }}"}) == (
        "template rendered a range, which is not JSON: 'range(0, 3)'"
    )


# set


def test_set_alone_is_the_output():
    assert output({"set": {"approved": True, "by": "alice"}}) == {"approved": True, "by": "alice"}


def test_set_merges_on_top_of_an_object_result():
    assert output({"jmespath": "input", "set": {"currency": "USD", "env": "prod"}}) == {
        "currency": "USD",
        "env": "prod",
    }


def test_set_merges_beside_a_wrapped_result():
    assert output({"jmespath": EXPENSIVE, "set": {"note": "expensive"}}) == {
        "result": ["lamp", "book"],
        "note": "expensive",
    }


def test_jmespath_then_template_then_set_combine_in_that_order():
    config = {
        "data": {"n": 2},
        "jmespath": "n",
        "template": '{"double": {{ result * 2 }}, "n": {{ data.n }}}',
        "set": {"n": 0},
    }
    assert output(config) == {"double": 4, "n": 0}


# config


def test_the_engine_is_told_to_leave_template_unrendered():
    assert TransformExecutor.raw_keys == frozenset({"template"})
    assert TransformExecutor.type == "transform"
    assert TransformExecutor.shell_quoted == frozenset()


def test_the_config_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(TransformExecutor.config_schema)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"data": [1]},
        {"jmespath": ""},
        {"jmespath": 3},
        {"template": ["{}"]},
        {"set": [1, 2]},
        {"set": {}, "extra": 1},
    ],
)
def test_the_schema_refuses_bad_configs(config):
    assert not Draft202012Validator(TransformExecutor.config_schema).is_valid(config)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "invalid config: give at least one of jmespath, template, set"),
        ({"data": 1}, "invalid config: give at least one of jmespath, template, set"),
        ({"set": "x"}, "invalid config at set: 'x' is not of type 'object'"),
        (
            {"set": {}, "map": "x"},
            "invalid config: Additional properties are not allowed ('map' was unexpected)",
        ),
    ],
)
def test_a_bad_config_fails_the_step_without_retry(config, error):
    assert failure(config) == error


def test_check_config_accepts_a_good_config():
    assert check_config({"jmespath": EXPENSIVE, "template": "{{ result | tojson }}"}) == []


def test_check_config_reports_jmespath_and_template_syntax():
    assert check_config({"jmespath": "a.b)", "template": '{\n"a": {% if %}}'}) == [
        ("jmespath", "invalid JMESPath expression 'a.b)': Unexpected token: ) at column 3"),
        (
            "template",
            "template syntax error: Expected an expression, got 'end of statement block' (line 2)",
        ),
    ]


def test_check_config_leaves_a_templated_expression_for_run_time():
    assert check_config({"jmespath": "{{ input.query }}"}) == []
