"""Workflow-template parameters: `(( name ))` placeholders, substituted on the parsed document
(flows/language/placeholders.py), and the orchestrator seed's pack (orchestrator_pack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.language.errors import DefinitionError
from flows.language.orchestrator_pack import read_pack
from flows.language.placeholders import (
    apply_defaults,
    body_problems,
    check_parameters,
    placeholders,
    schema_problems,
    substitute,
)

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["urls"],
    "properties": {
        "urls": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "replicas": {"type": "integer", "default": 2},
        "service": {"type": "string", "default": "web"},
        "limits": {
            "type": "object",
            "properties": {"cpu": {"type": "string", "default": "500m"}},
            "default": {},
        },
    },
}
SEED_PACK = Path("/work/shared/seed-assets/orchestrator/templates.json")


def doc(text: str):
    return yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("x: ((replicas))", {"replicas": 3}, {"x": 3}),
        ("x: (( urls ))", {"urls": ["a", "b"]}, {"x": ["a", "b"]}),
        ('x: "((limits))"', {"limits": {"cpu": "1"}}, {"x": {"cpu": "1"}}),
        ("x: deploy ((service)) now", {"service": "web"}, {"x": "deploy web now"}),
        ("x: n=((replicas)) ok=((flag))", {"replicas": 3, "flag": True}, {"x": "n=3 ok=true"}),
        ("x: all ((urls))", {"urls": ["a"]}, {"x": 'all ["a"]'}),
        ("((service))-step: {a: 1}", {"service": "web"}, {"web-step": {"a": 1}}),
        ("x: [((replicas)), 1]", {"replicas": 3}, {"x": [3, 1]}),
        ("x: '\\((not)) a placeholder'", {}, {"x": "((not)) a placeholder"}),
        ("x: '{{ input.a }} ((service))'", {"service": "web"}, {"x": "{{ input.a }} web"}),
    ],
)
def test_a_placeholder_keeps_its_type_as_a_whole_value_and_is_interpolated_in_a_string(
    text, values, expected
):
    assert substitute(doc(text), values) == expected


def test_a_value_cannot_inject_yaml_structure():
    evil = "x\nsteps:\n  pwn: {type: shell, run: id}"
    result = substitute(doc("steps: {a: {type: noop, with: {v: ((service))}}}"), {"service": evil})
    assert result == {"steps": {"a": {"type": "noop", "with": {"v": evil}}}}


def test_substitution_does_not_change_its_inputs():
    body, values = doc("x: ((urls))"), {"urls": ["a"]}
    result = substitute(body, values)
    result["x"].append("b")
    assert body == {"x": "((urls))"}
    assert values == {"urls": ["a"]}


def test_a_placeholder_without_a_value_is_an_error_naming_where():
    with pytest.raises(DefinitionError) as excinfo:
        substitute(doc("steps: {a: {with: {url: ((nope))}}}"), {})
    assert str(excinfo.value) == "steps.a.with.url: (( nope )) has no value"


def test_a_key_that_would_stop_being_a_string_is_an_error():
    with pytest.raises(DefinitionError, match="a key must stay a string"):
        substitute(doc("((urls)): 1"), {"urls": ["a"]})


def test_placeholders_are_found_in_keys_and_values_with_their_paths():
    found = list(placeholders(doc("a: ((x))\nb: [1, 'y ((y)) ((z))']\n((k)): 2")))
    assert found == [("x", ("a",)), ("y", ("b", 1)), ("z", ("b", 1)), ("k", ("((k))",))]


def test_defaults_fill_in_what_is_missing_recursively_without_overwriting():
    assert apply_defaults(SCHEMA, {"urls": ["a"], "replicas": 5}) == {
        "urls": ["a"],
        "replicas": 5,
        "service": "web",
        "limits": {"cpu": "500m"},
    }


@pytest.mark.parametrize(
    ("values", "problems"),
    [
        ({}, ["parameters: required: 'urls' is a required property"]),
        ({"urls": "a"}, ["parameters.urls: 'a' is not of type 'array'"]),
        ({"urls": ["a", 2]}, ["parameters.urls[1]: 2 is not of type 'string'"]),
        (
            {"urls": ["a"], "replicas": "3"},
            ["parameters.replicas: '3' is not of type 'integer'"],
        ),
        (
            {"urls": ["a"], "colour": "red"},
            [
                "parameters: unknown parameter: Additional properties are not allowed "
                "('colour' was unexpected)"
            ],
        ),
    ],
)
def test_bad_parameters_are_refused_with_their_paths(values, problems):
    with pytest.raises(DefinitionError) as excinfo:
        check_parameters(SCHEMA, values)
    assert [str(p) for p in excinfo.value.problems] == problems


def test_parameters_must_be_an_object():
    with pytest.raises(DefinitionError, match="must be an object"):
        check_parameters(SCHEMA, ["a"])


def test_good_parameters_come_back_with_defaults():
    assert check_parameters(SCHEMA, {"urls": ["a"]})["replicas"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("steps: {a: {type: noop, with: {x: ((colour))}}}", "(( colour )) is not a parameter"),
        ("steps: {a: {type: shell, run: 'echo ((service))'}}", "could inject commands"),
        ("steps: {a: {type: shell, with: {run: 'rm ((service))'}}}", "could inject commands"),
        ("steps: {a: {type: noop, with: {x: ((my-param))}}}", "'((' starts no placeholder"),
        ("description: x", "has no steps"),
        ("- a list", "must be a mapping"),
    ],
)
def test_a_bad_template_body_is_refused_when_saved(body, message):
    problems = body_problems(doc(body), SCHEMA)
    assert any(message in p.message for p in problems), problems


def test_a_placeholder_in_a_shell_env_or_argv_is_fine():
    body = doc("steps: {a: {type: shell, run: 'echo $S', env: {S: ((service))}}}")
    assert body_problems(body, SCHEMA) == []


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "must be a JSON Schema object"),
        ({"type": "array"}, "must be 'object'"),
        ({"type": "object", "properties": {"x": {"type": "nope"}}}, "not a valid JSON Schema"),
        ({"properties": {"my-param": {}}}, "is not a parameter name"),
        ({"properties": {"n": {"type": "integer", "default": "two"}}}, "the default is not valid"),
    ],
)
def test_a_bad_parameters_schema_is_refused(schema, message):
    problems = schema_problems(schema)
    assert any(message in p.message for p in problems), problems


def test_the_seed_pack_reads_into_chained_http_steps():
    [first, second] = read_pack(json.loads(SEED_PACK.read_text()))
    assert first.name == "intake_enrich_decide_act"
    steps = first.definition["steps"]
    assert list(steps) == ["intake", "enrich", "decide", "act"]
    assert steps["enrich"] == {
        "type": "http",
        "with": {"method": "POST", "url": "http://service/enrich", "json": {}},
        "needs": ["intake"],
    }
    assert "needs" not in steps["intake"]
    assert second.name == "detect_classify_route"


def test_seed_actions_retry_and_approval_map_to_our_language():
    [template] = read_pack(
        [
            {
                "name": "t",
                "steps": [
                    {
                        "name": "ask",
                        "action": "ai_router.chat",
                        "input": {"url": "http://ai/x", "body": {"q": 1}},
                        "retry": {"max": 2, "backoff_ms": 0},
                        "requires_approval": True,
                    },
                    {"name": "keep", "action": "transform", "input": {"set": {"a": 1}}},
                    {"name": "gate", "action": "condition", "input": {"key": "a", "equals": 1}},
                ],
            }
        ]
    )
    steps = template.definition["steps"]
    assert steps["ask"]["type"] == "ai_router.chat"
    assert steps["ask"]["retry"] == {"max_attempts": 3, "delay": "250ms", "backoff": "fixed"}
    assert steps["ask"]["requires_approval"] is True
    assert steps["keep"]["with"] == {"set": {"a": 1}}
    assert steps["gate"]["with"] == {"key": "a", "equals": 1}


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ("nope", "a template pack is"),
        ({"templates": []}, "holds no templates"),
        ({"templates": [{"name": "a"}]}, "templates[0].steps: required"),
        ({"templates": [{"steps": [{"name": "s", "action": "http"}]}]}, "templates[0].name"),
        ({"templates": [{"name": "a", "steps": [{"name": "s"}]}]}, "steps[0].action"),
        (
            {"templates": [{"name": "a", "steps": [{"name": "s", "action": "http"}]}] * 2},
            "'a' appears twice",
        ),
        (
            {"templates": [{"name": "a", "steps": [{"name": "s", "action": "x", "retry": 3}]}]},
            "steps[0].retry",
        ),
    ],
)
def test_a_malformed_pack_is_refused_as_a_whole(pack, message):
    with pytest.raises(DefinitionError) as excinfo:
        read_pack(pack)
    assert message in str(excinfo.value)
