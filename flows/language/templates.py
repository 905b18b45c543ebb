"""Templates in definitions: Jinja2 in a sandbox, with strict undefined.

A step's `with`, `env` and `when` are rendered against the run context: `input`, `steps.<name>.output`
(a hyphenated step name is also reachable with underscores, Strøm's rule) and `run`. A string that is
exactly one `{{ expression }}` keeps the expression's type (a number stays a number, an object an
object); anything else renders to text. In a shell command line no value is ever pasted: each one
reaches the process in an environment variable, so run input such as `$(rm -rf ~)` is printed,
never executed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from flows.language.errors import format_path

CONTEXT_ROOTS = frozenset({"input", "steps", "run", "parent", "parents", "secrets", "item"})
"""`parent`: the single parent's output; `parents`: outputs by parent name; `item`: the current
element in a for_each step; `secrets`: secret values by name (masked wherever they appear)."""
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


class TemplateError(ValueError):
    """A template failed to render; `path` says which value of the step it was."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | bool) or value is None:
        return json.dumps(value)
    return str(value)


_SHELL_VALUES: ContextVar[list[str] | None] = ContextVar("furrow_shell_values", default=None)
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
SHELL_VAR_PREFIX = "FURROW_ARG_"


def _shell_placeholder(value: Any) -> str:
    values = _SHELL_VALUES.get()
    if values is None:
        raise RuntimeError("shell templates render through render_shell()")
    values.append(_to_text(value))
    return f"\x00{len(values) - 1}\x00"


_TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, finalize=_to_text, autoescape=False)
_SHELL_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, finalize=_shell_placeholder, autoescape=False
)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@dataclass(frozen=True)
class References:
    roots: frozenset[str]
    """Top-level names the template reads (input, steps, run, ...)."""
    steps: frozenset[str]
    """Step names read through `steps.<name>` or `steps['<name>']`."""


def references(source: str) -> References:
    """What a template reads. Raises jinja2.TemplateSyntaxError for a template that does not parse."""
    tree = _TEXT_ENV.parse(source)
    roots = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}
    assigned = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    steps: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr):
                steps.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                steps.add(node.arg.value)
    return References(frozenset(roots - assigned), frozenset(steps))


def template_strings(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Every string in a JSON-like value that holds a template, with its path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, (*path, index))


def step_context(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """`steps` as templates see it: each name, and its underscore alias when the name has hyphens."""
    steps: dict[str, Any] = {}
    for name, entry in outputs.items():
        steps[name] = entry
        steps.setdefault(name.replace("-", "_"), entry)
    return steps


def render_value(
    value: Any,
    context: Mapping[str, Any],
    *,
    shell_quoted: frozenset[str] = frozenset(),
    path: tuple[str | int, ...] = (),
) -> Any:
    """Render every template string inside `value`. Raises TemplateError naming the failing path.

    Top-level keys named in `shell_quoted` are shell command lines: their values are passed in
    environment variables (added to the result's `env`) and referenced from the command line.
    """
    if isinstance(value, dict):
        rendered: dict[str, Any] = {}
        shell_env: dict[str, str] = {}
        for key, item in value.items():
            if path == () and key in shell_quoted and isinstance(item, str):
                rendered[key], variables = render_shell(item, context, path=(key,))
                shell_env.update(variables)
            else:
                rendered[key] = render_value(item, context, path=(*path, key))
        if shell_env:
            rendered["env"] = {**shell_env, **(rendered.get("env") or {})}
        return rendered
    if isinstance(value, list):
        return [render_value(item, context, path=(*path, i)) for i, item in enumerate(value)]
    if isinstance(value, str) and is_template(value):
        return render_string(value, context, path=path)
    return value


def render_string(
    source: str, context: Mapping[str, Any], *, path: tuple[str | int, ...] = ()
) -> Any:
    single = _SINGLE_EXPRESSION.match(source)
    try:
        if single:
            result = _TEXT_ENV.compile_expression(single.group("expr"), undefined_to_none=False)(
                **context
            )
            if isinstance(result, StrictUndefined):
                str(result)  # raises UndefinedError with Jinja's message
            return result
        return _TEXT_ENV.from_string(source).render(**context)
    except JinjaTemplateError as exc:
        raise TemplateError(format_path(path), _describe(exc)) from None


def render_shell(
    source: str, context: Mapping[str, Any], *, path: tuple[str | int, ...] = ()
) -> tuple[str, dict[str, str]]:
    """A shell command line with its substituted values moved into environment variables.

    Each `{{ expr }}` becomes a reference such as `"${FURROW_ARG_0}"`, quoted to suit where it
    stands (bare, inside double quotes, inside single quotes), and the value goes into the returned
    variables. The shell never parses a value, so input such as `$(rm -rf ~)` is data, never code,
    wherever the template puts it.
    """
    values: list[str] = []
    token = _SHELL_VALUES.set(values)
    try:
        text = _SHELL_ENV.from_string(source).render(**context)
    except JinjaTemplateError as exc:
        raise TemplateError(format_path(path), _describe(exc)) from None
    finally:
        _SHELL_VALUES.reset(token)
    return _reference_placeholders(text), {
        f"{SHELL_VAR_PREFIX}{i}": v for i, v in enumerate(values)
    }


def _reference_placeholders(text: str) -> str:
    """Replace each placeholder with a variable reference that is safe in its quoting context."""
    out: list[str] = []
    state = "bare"  # or "single", "double"
    i = 0
    while i < len(text):
        char = text[i]
        match = _PLACEHOLDER.match(text, i) if char == "\x00" else None
        if match:
            name = f"{SHELL_VAR_PREFIX}{match.group(1)}"
            out.append(
                {
                    "bare": f'"${{{name}}}"',
                    "double": f"${{{name}}}",
                    "single": f"'\"${{{name}}}\"'",
                }[state]
            )
            i = match.end()
            continue
        out.append(char)
        if char == "\\" and state != "single" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == "'" and state != "double":
            state = "single" if state == "bare" else "bare"
        elif char == '"' and state != "single":
            state = "double" if state == "bare" else "bare"
        i += 1
    return "".join(out)


def evaluate_condition(source: str | bool, context: Mapping[str, Any]) -> bool:
    """A `when:` guard: `{{ expr }}` or a bare expression; its truth decides whether the step runs."""
    if isinstance(source, bool):
        return source
    single = _SINGLE_EXPRESSION.match(source)
    expression = single.group("expr") if single else source
    try:
        result = _TEXT_ENV.compile_expression(expression, undefined_to_none=False)(**context)
        if isinstance(result, StrictUndefined):
            str(result)
    except JinjaTemplateError as exc:
        raise TemplateError("when", _describe(exc)) from None
    if isinstance(result, str):
        return result.strip().lower() not in ("", "false", "0", "no", "off", "none", "null")
    return bool(result)


def check_syntax(source: str, *, expression: bool = False) -> str | None:
    """None if `source` parses, else the message (with line) of its syntax error."""
    try:
        if expression:
            single = _SINGLE_EXPRESSION.match(source)
            _TEXT_ENV.compile_expression(single.group("expr") if single else source)
        else:
            _TEXT_ENV.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (line {exc.lineno})"
    return None


def _describe(exc: JinjaTemplateError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"template error: {message}"
