"""Run a sandboxed Lua script on the step's input; what it returns is the step's output.

A table the script returns is the output; any other value `v` becomes `{"result": v}` (Spuds' rule).
The sandbox and its limits are in steps/lua.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from steps.executors.base import StepContext, StepResult, config_error
from steps.lua import (
    DEFAULT_INSTRUCTIONS,
    DEFAULT_MEMORY,
    MAX_INSTRUCTIONS,
    MAX_MEMORY,
    ErrorKind,
    ScriptError,
    run_script,
)

MB = 2**20
RETRYABLE = frozenset({ErrorKind.TIME, ErrorKind.CANCELLED})
"""Another attempt may finish in time; every other script error happens again the same way."""


class ScriptExecutor:
    type: ClassVar[str] = "script"
    description: ClassVar[str] = (
        "Runs a sandboxed Lua script on the step's input; a returned table is the output."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "lua": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1},
            "language": {"enum": ["lua"], "default": "lua"},
            "input": {},
            "instruction_limit": {
                "type": "integer",
                "minimum": 1000,
                "maximum": MAX_INSTRUCTIONS,
                "default": DEFAULT_INSTRUCTIONS,
            },
            "memory_mb": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_MEMORY // MB,
                "default": DEFAULT_MEMORY // MB,
            },
        },
        "oneOf": [{"required": ["lua"]}, {"required": ["source"]}],
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()
    raw_keys: ClassVar[frozenset[str]] = frozenset({"lua", "source"})
    """Lua source is not a template: `{{1, 2}}` is a nested table, not Jinja."""

    def run(self, ctx: StepContext) -> StepResult:
        config = ctx.config
        problem = _exclusive_error(config) or config_error(self.config_schema, config)
        if problem:
            return StepResult.failure(problem, retryable=False)
        try:
            value = run_script(
                config["lua"] if "lua" in config else config["source"],
                config.get("input", ctx.input),
                instruction_limit=config.get("instruction_limit", DEFAULT_INSTRUCTIONS),
                memory_limit=config.get("memory_mb", DEFAULT_MEMORY // MB) * MB,
                time_limit=ctx.timeout,
                log=ctx.log,
                cancel=ctx.cancel,
            )
        except ScriptError as exc:
            return StepResult.failure(str(exc), retryable=exc.kind in RETRYABLE)
        return StepResult.success(value if isinstance(value, dict) else {"result": value})


def _exclusive_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's oneOf would only report "valid under each of ...".
    if ("lua" in config) == ("source" in config):
        return "invalid config: set exactly one of lua or source (the script's Lua source)"
    return None
