"""Workflow-template parameters: `(( name ))` placeholders, filled in when a template is
instantiated into a workflow definition. (Not the run-time `{{ … }}` expressions of templates.py.)

The syntax is Concourse's: `((` and `))` mean nothing to YAML (unlike `[[ x ]]`, which YAML reads
as a nested list, or `{{ }}`, which is ours at run time), so a template body is plain YAML.
Substitution walks the parsed document, never its text, so a value cannot inject YAML:

- a string that is exactly one placeholder becomes the parameter's value, with its type
  (`replicas: ((replicas))` gives a number, `urls: ((urls))` a list);
- a placeholder inside a longer string is interpolated: strings as they are, anything else as
  JSON (`true`, `[1, 2]`);
- keys are interpolated too, and must stay strings;
- `\\((` writes a literal `((`.

Pure: no Django, no clock; the callers (flows/workflow_templates.py) persist and publish.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from flows.language.errors import DefinitionError, Problem, format_path

PARAMETER_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_PLACEHOLDER = re.compile(rf"(?<!\\)\(\(\s*({PARAMETER_NAME})\s*\)\)")
_WHOLE = re.compile(rf"^\(\(\s*({PARAMETER_NAME})\s*\)\)$")
_ESCAPED = "\\(("
_ANY_OPENING = re.compile(r"(?<!\\)\(\((?!\()")
SHELL_COMMAND_KEYS = ("run",)
"""A shell command string: a placeholder there would paste a value into a command line."""

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def placeholders(doc: Any) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """Every (parameter name, path) used in `doc`, keys and values, in document order."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            yield from ((match.group(1), path) for match in _PLACEHOLDER.finditer(value))
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack += [(item, (*path, key)), (key, (*path, key))]  # the key comes out first
        elif isinstance(value, list):
            stack.extend(reversed([(item, (*path, i)) for i, item in enumerate(value)]))


def body_problems(doc: Any, parameters_schema: Any) -> list[Problem]:
    """What is wrong with a template: its parameters' schema, and placeholders in its body that
    name no parameter, are malformed, or sit in a shell command string. Empty when it is fine."""
    problems = schema_problems(parameters_schema)
    if not isinstance(doc, dict):
        return [*problems, Problem("definition", "must be a mapping (steps and the rest)")]
    if "steps" not in doc:
        problems.append(Problem("definition", "has no steps"))
    known = declared(parameters_schema)
    for name, path in placeholders(doc):
        where = format_path(("definition", *path))
        if name not in known:
            problems.append(Problem(where, f"(( {name} )) is not a parameter{_choices(known)}"))
        elif _in_shell_command(path):
            problems.append(
                Problem(
                    where,
                    "a parameter in a shell command string could inject commands; "
                    "pass it through env (or argv) and use $NAME",
                )
            )
    problems += _malformed(doc)
    return sorted(set(problems))


def _choices(known: frozenset[str]) -> str:
    return f" (parameters: {', '.join(sorted(known))})" if known else " (it declares none)"


def _in_shell_command(path: tuple[str | int, ...]) -> bool:
    # steps.<name>.run, or steps.<name>.with.run
    return (
        len(path) in (3, 4)
        and path[0] == "steps"
        and path[-1] in SHELL_COMMAND_KEYS
        and (len(path) == 3 or path[2] == "with")
    )


def _malformed(doc: Any) -> list[Problem]:
    """`((` that opens no valid placeholder, e.g. `((my-param))`: a typo, not literal text."""
    out: list[Problem] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            rest = _PLACEHOLDER.sub("", value)
            if _ANY_OPENING.search(rest):
                out.append(
                    Problem(
                        format_path(("definition", *path)),
                        "'((' starts no placeholder: write (( name )) with a parameter's "
                        "name, or \\(( for a literal '(('",
                    )
                )
        elif isinstance(value, dict):
            stack += [(item, (*path, key)) for key, item in value.items()]
        elif isinstance(value, list):
            stack += [(item, (*path, i)) for i, item in enumerate(value)]
    return out


def declared(parameters_schema: Any) -> frozenset[str]:
    """The parameter names a parameters schema declares (its top-level properties)."""
    if not isinstance(parameters_schema, dict):
        return frozenset()
    properties = parameters_schema.get("properties")
    return frozenset(properties) if isinstance(properties, dict) else frozenset()


def schema_problems(parameters_schema: Any) -> list[Problem]:
    """A parameters schema must be a valid JSON Schema of an object whose property names are
    placeholder names, and its defaults must satisfy it."""
    if not isinstance(parameters_schema, dict):
        return [Problem("parameters", "must be a JSON Schema object")]
    try:
        Draft202012Validator.check_schema(parameters_schema)
    except SchemaError as exc:
        where = format_path(("parameters", *exc.absolute_path))
        return [Problem(where, f"not a valid JSON Schema: {exc.message}")]
    if parameters_schema.get("type", "object") != "object":
        return [Problem("parameters.type", "must be 'object' (parameters are named)")]
    properties = parameters_schema.get("properties", {})
    if not isinstance(properties, dict):
        return [Problem("parameters.properties", "must be a mapping of parameter names")]
    problems = [
        Problem(
            f"parameters.properties.{name}",
            f"'{name}' is not a parameter name (letters, digits and _, not starting with a digit)",
        )
        for name in properties
        if not re.fullmatch(PARAMETER_NAME, name)
    ]
    if problems:
        return problems
    defaults = apply_defaults(parameters_schema, {})
    for error in _errors(parameters_schema, defaults):
        if error.validator != "required" and error.absolute_path:
            name, *rest = error.absolute_path
            where = format_path(("parameters", "properties", name, "default", *rest))
            problems.append(Problem(where, f"the default is not valid: {error.message}"))
    return problems


def apply_defaults(schema: Mapping[str, Any], values: Any) -> Any:
    """`values` with the `default` of every property it lacks filled in, recursively into nested
    objects. A copy: neither argument is changed."""
    if not isinstance(values, dict) or not isinstance(schema, dict):
        return copy.deepcopy(values)
    out = copy.deepcopy(values)
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return out
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


def check_parameters(parameters_schema: Mapping[str, Any], values: Any) -> dict[str, Any]:
    """The parameters with defaults applied, valid against the schema.

    Raises DefinitionError naming each problem's path (`parameters.urls[1]`).
    """
    if not isinstance(values, dict):
        raise DefinitionError(Problem("parameters", "must be an object of parameter values"))
    filled = apply_defaults(parameters_schema, values)
    problems = _value_problems(parameters_schema, filled)
    if problems:
        raise DefinitionError(problems)
    return filled


@cache
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def _errors(schema: Mapping[str, Any], values: Any) -> Iterator[Any]:
    return _validator(json.dumps(schema, sort_keys=True)).iter_errors(values)


def _value_problems(schema: Mapping[str, Any], values: Any) -> list[Problem]:
    problems = []
    for error in _errors(schema, values):
        path = format_path(("parameters", *error.absolute_path))
        message = error.message
        if error.validator == "required":
            message = f"required: {message}"
        elif error.validator == "additionalProperties":
            message = f"unknown parameter: {message}"
        problems.append(Problem(path, message))
    return sorted(set(problems))


def substitute(doc: Any, values: Mapping[str, Any]) -> Any:
    """A copy of `doc` with every placeholder replaced by its value (see the module docstring).

    Raises DefinitionError for a placeholder with no value or a key that would stop being a
    string.
    """
    problems: list[Problem] = []
    result = _fill(doc, values, (), problems)
    if problems:
        raise DefinitionError(problems)
    return result


def _fill(value: Any, values: Mapping[str, Any], path: tuple, problems: list[Problem]) -> Any:
    if isinstance(value, str):
        return _fill_string(value, values, path, problems)
    if isinstance(value, list):
        return [_fill(item, values, (*path, i), problems) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            new_key = _fill_key(key, values, (*path, key), problems)
            out[new_key] = _fill(item, values, (*path, key), problems)
        return out
    return value


def _fill_string(text: str, values: Mapping[str, Any], path: tuple, problems: list) -> Any:
    whole = _WHOLE.match(text)
    if whole:
        name = whole.group(1)
        if name not in values:
            problems.append(_missing(name, path))
            return text
        return copy.deepcopy(values[name])

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            problems.append(_missing(name, path))
            return match.group(0)
        value = values[name]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _PLACEHOLDER.sub(one, text).replace(_ESCAPED, "((")


def _fill_key(key: str, values: Mapping[str, Any], path: tuple, problems: list) -> str:
    filled = _fill_string(key, values, path, problems)
    if isinstance(filled, str):
        return filled
    if isinstance(filled, int | float) and not isinstance(filled, bool):
        return str(filled)
    problems.append(Problem(format_path(path), "a key must stay a string"))
    return key


def _missing(name: str, path: tuple) -> Problem:
    return Problem(format_path(path), f"(( {name} )) has no value")
