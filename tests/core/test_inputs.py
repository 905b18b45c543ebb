from __future__ import annotations

from typing import Any

import pytest

from flows.language.errors import DefinitionError
from flows.language.inputs import InputError, prepare_input

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["service"],
    "additionalProperties": False,
    "properties": {
        "service": {"type": "string"},
        "replicas": {"type": "integer", "minimum": 1, "default": 2},
        "db": {
            "type": "object",
            "default": {},
            "properties": {
                "host": {"type": "string", "default": "localhost"},
                "port": {"type": "integer", "default": 5432},
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "contact": {"type": "string", "format": "email"},
    },
}


def problems_of(value: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    with pytest.raises(InputError) as excinfo:
        prepare_input(schema, value)
    return [str(problem) for problem in excinfo.value.problems]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"service": "web"},
            {"service": "web", "replicas": 2, "db": {"host": "localhost", "port": 5432}},
        ),
        (
            {"service": "web", "replicas": 5, "db": {"host": "db.internal"}},
            {"service": "web", "replicas": 5, "db": {"host": "db.internal", "port": 5432}},
        ),
        (
            {"service": "web", "db": {"host": "h", "port": 1}, "tags": []},
            {"service": "web", "replicas": 2, "db": {"host": "h", "port": 1}, "tags": []},
        ),
    ],
    ids=["all-defaults", "nested-defaults-fill-gaps", "nothing-to-fill"],
)
def test_defaults_are_applied_nested_ones_too(value, expected):
    assert prepare_input(SCHEMA, value) == expected


def test_none_counts_as_an_empty_object():
    assert prepare_input({"properties": {"n": {"default": 1}}}, None) == {"n": 1}


def test_the_callers_value_and_the_schemas_defaults_are_not_mutated():
    value = {"service": "web", "db": {}}
    first = prepare_input(SCHEMA, value)
    first["db"]["host"] = "changed"
    assert value == {"service": "web", "db": {}}
    assert prepare_input(SCHEMA, {"service": "web"})["db"]["host"] == "localhost"


def test_every_problem_is_reported_with_its_path_sorted():
    value = {
        "replicas": 0,
        "db": {"port": "5432"},
        "tags": ["ok", 7],
        "contact": "not-an-email",
        "colour": "red",
    }
    assert problems_of(value) == [
        "input: 'service' is a required property",
        "input: Additional properties are not allowed ('colour' was unexpected)",
        "input.contact: 'not-an-email' is not a 'email'",
        "input.db.port: '5432' is not of type 'integer'",
        "input.replicas: 0 is less than the minimum of 1",
        "input.tags[1]: 7 is not of type 'string'",
    ]


def test_a_default_is_validated_like_any_other_value():
    schema = {"properties": {"replicas": {"type": "integer", "default": "two"}}}
    assert problems_of({}, schema) == ["input.replicas: 'two' is not of type 'integer'"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "list"), ("web", "str"), (3, "int"), (True, "bool")],
)
def test_input_that_is_not_an_object_is_refused(value, kind):
    assert problems_of(value) == [f"input: must be an object, not {kind}"]


def test_the_error_is_a_definition_error_with_a_summary():
    with pytest.raises(DefinitionError, match=r"^2 problems: input: 'service' is a required "):
        prepare_input(SCHEMA, {"replicas": 0})
