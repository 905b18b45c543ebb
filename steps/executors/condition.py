"""Choose which successors run: compare one value and pick a branch (SPANE's nextNodes).

The subject is `value` (usually a rendered template such as "{{ steps.check.output.status }}")
or `key`, a dotted path into the run context ("input.env", "steps.check.output.items.0"). A key
that is missing makes the condition false whatever the comparison (the orchestrator seed's rule).

Comparisons (at most one; `equals` and `not_equals` may both be given, and then `equals` wins,
as in the seed):

- `equals` / `not_equals`: JSON equality. Numbers compare numerically (1 equals 1.0), but a
  boolean is never a number (true does not equal 1) and a string is never a number ("1" does
  not equal 1). Arrays and objects compare element by element with the same rule.
- `in`: the subject equals (as above) one of the array's items.
- `matches`: Python `re.search` of the regex in the subject; a subject that is not a string is
  matched against its JSON text (200 -> "200", true -> "true").
- none: JSON truthiness: null, false, 0, "", [] and {} are false, everything else true
  (so the string "false" is true: compare with `equals: false` or `equals: "false"` instead).

Branching: true runs `then` (default: every successor); false runs `else` or, without one,
follows `on_false`: "stop" (default: no successor runs, they are skipped), "fail" (the step
fails) or "continue" (every successor runs). The step's successors are not known here; the
definition checks elsewhere that `then` and `else` name them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from flows.language.templates import is_template
from steps.executors.base import StepContext, StepResult, config_error

SHOWN_CHARS = 100
COMPARISONS = ("equals", "not_equals", "in", "matches")
_STEP_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}


class OnFalse(StrEnum):
    STOP = "stop"
    FAIL = "fail"
    CONTINUE = "continue"


class _Missing:
    """The subject of a key that the context does not hold."""


MISSING = _Missing()


class ConditionExecutor:
    type: ClassVar[str] = "condition"
    description: ClassVar[str] = (
        "Compares a value and chooses which successors run: `then`, `else` or stop/fail/continue."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "value": {},
            "key": {"type": "string", "minLength": 1},
            "equals": {},
            "not_equals": {},
            "in": {"type": "array"},
            "matches": {"type": "string"},
            "then": _STEP_NAMES,
            "else": _STEP_NAMES,
            "on_false": {"enum": [choice.value for choice in OnFalse]},
        },
        "oneOf": [{"required": ["value"]}, {"required": ["key"]}],
        "dependentSchemas": {
            "in": {
                "not": {
                    "anyOf": [{"required": [key]} for key in ("equals", "not_equals", "matches")]
                }
            },
            "matches": {
                "not": {"anyOf": [{"required": [key]} for key in ("equals", "not_equals")]}
            },
            "else": {"not": {"required": ["on_false"]}},
        },
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: StepContext) -> StepResult:
        problem = _combination_error(ctx.config) or config_error(self.config_schema, ctx.config)
        if problem:
            return StepResult.failure(problem, retryable=False)
        try:
            outcome = decide(ctx.config, ctx.context)
        except re.error as exc:
            return StepResult.failure(
                f"invalid regex {ctx.config['matches']!r} in matches: {exc}", retryable=False
            )
        return outcome.result(ctx.config)


@dataclass(frozen=True)
class Outcome:
    """What the comparison found; `result()` turns it into the step's result."""

    passed: bool
    subject: Any
    description: str
    """The comparison in words, for the failure message: `input.env is "dev", expected "prod"`."""

    def result(self, config: Mapping[str, Any]) -> StepResult:
        value = None if self.subject is MISSING else self.subject
        branch = "then" if self.passed else "else"
        output: dict[str, Any] = {"result": self.passed, "value": value, "branch": branch}
        if self.passed:
            return StepResult(ok=True, output=output, next=_names(config.get("then")))
        if "else" in config:
            return StepResult(ok=True, output=output, next=tuple(config["else"]))
        on_false = OnFalse(config.get("on_false", OnFalse.STOP))
        if on_false is OnFalse.FAIL:
            return StepResult.failure(
                f"condition failed: {self.description}", output=output, retryable=False
            )
        return StepResult(ok=True, output=output, next=None if on_false is OnFalse.CONTINUE else ())


def decide(config: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
    """Evaluate the comparison of a valid config. Raises re.error for a bad `matches` regex."""
    if "key" in config:
        subject, shown = lookup(context, config["key"]), config["key"]
    else:
        subject, shown = config["value"], "value"
    if subject is MISSING:
        return Outcome(False, subject, f"{shown} is missing")
    is_ = f"{shown} is {_show(subject)}"
    if "equals" in config:
        expected = config["equals"]
        return Outcome(json_equal(subject, expected), subject, f"{is_}, expected {_show(expected)}")
    if "not_equals" in config:
        other = config["not_equals"]
        return Outcome(
            not json_equal(subject, other), subject, f"{is_}, expected anything but {_show(other)}"
        )
    if "in" in config:
        choices = config["in"]
        passed = any(json_equal(subject, choice) for choice in choices)
        return Outcome(passed, subject, f"{is_}, expected one of {_show(choices)}")
    if "matches" in config:
        pattern = config["matches"]
        text = subject if isinstance(subject, str) else json.dumps(subject, default=str)
        passed = re.search(pattern, text) is not None
        return Outcome(passed, subject, f"{is_}, expected a match for /{pattern}/")
    return Outcome(json_truthy(subject), subject, f"{is_}, expected a true value")


def lookup(context: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted path (a number indexes an array), or MISSING."""
    value: Any = context
    for part in key.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: numeric for numbers, but bool and str never equal a number."""
    if isinstance(left, bool) or isinstance(right, bool):
        # Python says True == 1; JSON does not.
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


def json_truthy(value: Any) -> bool:
    """JSON truthiness, which for parsed JSON is Python's: null, false, 0, "", [] and {} are false."""
    return bool(value)


def check_config(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Publish-time problems as (key, message): the `matches` regex must compile.

    `config` is the unrendered `with`; a regex that is itself a template is checked at run time.
    """
    pattern = config.get("matches")
    if not isinstance(pattern, str) or is_template(pattern):
        return []
    try:
        re.compile(pattern)
    except re.error as exc:
        return [("matches", f"invalid regex {pattern!r}: {exc}")]
    return []


def _combination_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's oneOf/not would only report "... should not be valid under ...".
    if ("value" in config) == ("key" in config):
        return "invalid config: give exactly one of value, key"
    given = [name for name in COMPARISONS if name in config]
    if len(given) > 1 and given != ["equals", "not_equals"]:
        return f"invalid config: give at most one of equals/not_equals, in, matches (got {', '.join(given)})"
    if "else" in config and "on_false" in config:
        return "invalid config: on_false only applies without else"
    return None


def _names(names: list[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."
