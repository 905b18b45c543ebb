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
QUEUE_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"
"""A queue name becomes part of a Django-Q2 cluster name (a broker list key): kept plain."""

QUEUE: dict[str, Any] = {
    "type": "string",
    "pattern": QUEUE_PATTERN,
    "description": "the worker queue that runs the step (`manage.py worker --queue <name>`); "
    "none given: the default queue",
}

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

APPROVERS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "users": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "groups": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "permissions": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"},
        },
    },
    "description": "Who may decide: these users, members of these groups, or holders of these "
    "permissions (app_label.codename). None given: staff and holders of runs.decide_approval.",
}

APPROVAL_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "approvers": APPROVERS,
        "message": {"type": "string", "description": "What the approver is asked."},
        "form": {
            "type": "object",
            "description": "JSON Schema of the answers an approver gives; they become the output.",
        },
        "default": {
            "enum": ["approve", "reject"],
            "description": "The decision taken when the step's timeout passes (default reject).",
        },
    },
}

HOOK: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "message": {"type": "string", "description": "recorded with the step.hook event"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "run": {
            "type": "array",
            "items": {"type": "string", "pattern": STEP_NAME_PATTERN},
            "uniqueItems": True,
            "description": "steps that need this one and run only when this hook fires",
        },
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
        "when": {
            "oneOf": [
                {"type": ["string", "boolean"]},
                {
                    "type": "object",
                    "required": ["lua"],
                    "additionalProperties": False,
                    "properties": {"lua": {"type": "string", "minLength": 1}},
                },
            ],
            "description": "a template expression, true/false, or {lua: <source>}",
        },
        "on_failure": {"enum": ["fail", "continue"]},
        "join": {"enum": ["all_succeeded", "all_done", "any_succeeded", "none_failed"]},
        "for_each": {
            "oneOf": [
                {"type": ["string", "array"]},
                {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                    "additionalProperties": {"type": ["string", "array"]},
                },
            ],
            "description": "an array (or a template giving one), or a mapping of names to arrays",
        },
        "parallelism": {"type": "integer", "minimum": 1, "maximum": 1000},
        "on_item_failure": {"enum": ["fail", "continue"]},
        "circuit_breaker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "failure_threshold": {"type": "integer", "minimum": 1, "maximum": 1000},
                "success_threshold": {"type": "integer", "minimum": 1, "maximum": 1000},
                "open_timeout": DURATION,
                "on_open": {"enum": ["fail", "defer"]},
            },
        },
        "on_unhealthy": {"enum": ["wait", "fail"]},
        "dead_letter": {
            "type": "boolean",
            "description": "after the last failed attempt, keep the step in the dead-letter queue",
        },
        "requires_approval": {
            "oneOf": [{"type": "boolean"}, APPROVAL_CONFIG],
            "description": "true, or {approvers, message, form, default}: a person approves "
            "before the step runs",
        },
        "approval_timeout": DURATION,
        "queue": QUEUE,
        "hooks": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"on_failure": HOOK, "on_success": HOOK},
        },
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
                "dead_letter": {"type": "boolean"},
                "queue": QUEUE,
            },
        },
        "concurrency": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_runs": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "runs of this workflow at once; the rest queue",
                },
                "max_parallel_steps": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "steps of one run ready or running at once",
                },
            },
        },
        "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
        "deadline": DURATION,
        "steps": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": STEP_NAME_PATTERN},
            "additionalProperties": STEP,
        },
    },
}

SHELL_SHORTHANDS = ("run", "argv", "env")
