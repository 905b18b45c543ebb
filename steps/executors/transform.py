"""Reshape data without running code: a JMESPath query, a Jinja template that renders JSON, a `set`.

The three parts run in this order, each optional but at least one given:

1. `jmespath` queries `data` when `with.data` is given; otherwise it queries the run context with
   the step's input added as `parent`: `{"input": ..., "steps": {name: {"output", "status"}},
   "run": ..., "item": ... (inside for_each), "parent": <the step's input>}`.
2. `template` is Jinja (the sandboxed, strict environment of flows/language/templates.py) whose
   rendered text must be JSON. It sees the run context, `parent`, `data` (when `with.data` is
   given) and `result` (when `jmespath` is given: its result). The engine leaves this key
   unrendered (`raw_keys`) so that it is rendered once, here, with those extra names.
3. `set` is an object merged (shallowly) on top of the output, the orchestrator seed's `input.set`.

A dict result is the output; any other value becomes `{"result": value}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import jmespath
from jmespath import exceptions as jmespath_errors

from flows.language.templates import TemplateError, check_syntax, is_template, render_string
from steps.executors.base import StepContext, StepResult, config_error

RENDERED_TEXT_CHARS = 200
PARTS = ("jmespath", "template", "set")


class TransformError(ValueError):
    """A transform that cannot succeed on another attempt; the message is the step's error."""


class TransformExecutor:
    type: ClassVar[str] = "transform"
    description: ClassVar[str] = (
        "Reshapes data: a JMESPath query, a Jinja template rendering JSON, and/or `set` values."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "jmespath": {"type": "string", "minLength": 1},
            "data": {},
            "template": {"type": "string", "minLength": 1},
            "set": {"type": "object"},
        },
        "anyOf": [{"required": [part]} for part in PARTS],
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()
    raw_keys: ClassVar[frozenset[str]] = frozenset({"template"})
    """Keys the engine must not render: `template` is rendered here, with `data` and `result`."""

    def run(self, ctx: StepContext) -> StepResult:
        problem = _missing_part_error(ctx.config) or config_error(self.config_schema, ctx.config)
        if problem:
            return StepResult.failure(problem, retryable=False)
        try:
            output = transform(ctx.config, ctx.context, ctx.input)
        except TransformError as exc:
            return StepResult.failure(str(exc), retryable=False)
        return StepResult.success(output)


def transform(config: Mapping[str, Any], context: Mapping[str, Any], parent: Any) -> dict[str, Any]:
    """The step's output for an already validated config. Raises TransformError."""
    names: dict[str, Any] = {**context, "parent": parent}
    if "data" in config:
        names["data"] = config["data"]
    output: dict[str, Any] = {}
    if "jmespath" in config or "template" in config:
        value = _query_and_render(config, names)
        output = value if isinstance(value, dict) else {"result": value}
    return {**output, **config.get("set", {})}


def _query_and_render(config: Mapping[str, Any], names: dict[str, Any]) -> Any:
    value: Any = None
    if "jmespath" in config:
        target = config.get("data", names)
        value = names["result"] = _search(config["jmespath"], target)
    if "template" in config:
        value = _render_json(config["template"], names)
    return value


def check_config(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Publish-time problems as (key, message): JMESPath syntax and Jinja syntax of `template`.

    `config` is the step's unrendered `with`; a `jmespath` that is itself a template is only
    known after rendering, so it is checked at run time instead.
    """
    problems: list[tuple[str, str]] = []
    expression = config.get("jmespath")
    if isinstance(expression, str) and not is_template(expression):
        try:
            jmespath.compile(expression)
        except jmespath_errors.JMESPathError as exc:
            problems.append(("jmespath", _jmespath_message(expression, exc)))
    template = config.get("template")
    if isinstance(template, str):
        syntax = check_syntax(template)
        if syntax:
            problems.append(("template", syntax))
    return problems


def _missing_part_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's anyOf would only report "is not valid under any of the given schemas".
    if not any(part in config for part in PARTS):
        return "invalid config: give at least one of jmespath, template, set"
    return None


def _search(expression: str, data: Any) -> Any:
    try:
        return jmespath.compile(expression).search(data)
    except jmespath_errors.JMESPathError as exc:
        raise TransformError(_jmespath_message(expression, exc)) from None


def _jmespath_message(expression: str, exc: jmespath_errors.JMESPathError) -> str:
    if isinstance(exc, jmespath_errors.IncompleteExpressionError):
        return f"invalid JMESPath expression {expression!r}: incomplete expression"
    if isinstance(exc, jmespath_errors.ParseError):
        where = f" at column {exc.lex_position}" if exc.lex_position is not None else ""
        return f"invalid JMESPath expression {expression!r}: {exc.msg}{where}"
    # Unknown functions and type errors only show when the expression meets the data.
    return f"JMESPath expression {expression!r} failed: {exc}"


def _render_json(source: str, names: Mapping[str, Any]) -> Any:
    try:
        rendered = render_string(source, names, path=("template",))
    except TemplateError as exc:
        raise TransformError(str(exc)) from None
    if not isinstance(rendered, str):
        # A template that is one `{{ expression }}` keeps the value's type; rendering it as text
        # and parsing that back would give the same value, provided it is JSON at all.
        return _check_json_value(rendered)
    try:
        return json.loads(rendered, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise TransformError(
            f"template did not render JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            f"rendered text begins {rendered[:RENDERED_TEXT_CHARS]!r}"
        ) from None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python's extensions to JSON; a stored output could not hold them.
    raise TransformError(f"template did not render JSON: {name} is not a JSON value")


def _check_json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TransformError(
            f"template rendered a {type(value).__name__}, which is not JSON: "
            f"{str(value)[:RENDERED_TEXT_CHARS]!r}"
        ) from None
    return value
