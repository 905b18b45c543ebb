"""The JSON Schema (Draft 2020-12) of a native workflow definition.

The structure is checked here; what a schema cannot say (references between steps, cycles,
templates) is checked in `flows.language.validate`. Each step type's `with` is checked against
that type's own schema, passed in by the caller.
"""

from __future__ import annotations

from typing import Any

from flows.language.durations import DURATION_PATTERN

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
STEP_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"

DURATION: dict[str, Any] = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "description": "seconds, or a duration such as 500ms, 30s, 10m, 1h30m",
}

RETRY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "delay": DURATION,
        "backoff": {"enum": ["fixed", "linear", "exponential"]},
        "max_delay": DURATION,
        "jitter": {"oneOf": [{"type": "boolean"}, {"type": "number", "minimum": 0, "maximum": 1}]},
    },
}

STEP: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "needs": {
            "type": "array",
            "items": {"type": "string", "pattern": STEP_NAME_PATTERN},
            "uniqueItems": True,
        },
        "with": {"type": "object"},
        # Shell shorthands, as in `run: make build` at step level; they are moved into `with`.
        "run": {"type": "string"},
        "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "env": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "retry": RETRY,
        "timeout": DURATION,
        "when": {"type": ["string", "boolean"]},
        "on_failure": {"enum": ["fail", "continue"]},
    },
}

WORKFLOW: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://furrow.dev/schemas/workflow.json",
    "title": "Furrow workflow",
    "type": "object",
    "required": ["name", "steps"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "description": {"type": "string"},
        "input": {"type": "object", "description": "JSON Schema of the run input"},
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "retry": RETRY,
                "timeout": DURATION,
                "on_failure": {"enum": ["fail", "continue"]},
            },
        },
        "steps": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": STEP_NAME_PATTERN},
            "additionalProperties": STEP,
        },
    },
}

SHELL_SHORTHANDS = ("run", "argv", "env")
