"""Run input: checked against the workflow's input schema, with the schema's defaults applied."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from flows.language.errors import DefinitionError, Problem, format_path


class InputError(DefinitionError):
    """The run input does not satisfy the workflow's input schema."""


def prepare_input(schema: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """`value` with defaults filled in; raises InputError listing every problem with its path."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InputError(Problem("input", f"must be an object, not {type(value).__name__}"))
    filled = apply_defaults(schema, copy.deepcopy(value))
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems = sorted(
        Problem(format_path(("input", *error.absolute_path)), error.message)
        for error in validator.iter_errors(filled)
    )
    if problems:
        raise InputError(problems)
    return filled


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Fill `default`s of object properties that are missing, recursively."""
    if not isinstance(value, dict) or not isinstance(schema, Mapping):
        return value
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        if key not in value and "default" in prop:
            value[key] = copy.deepcopy(prop["default"])
        if key in value:
            value[key] = apply_defaults(prop, value[key])
    return value
