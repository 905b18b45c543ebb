"""Start another workflow as a child run and wait, holding no worker, for it to end.

The executor only describes the child (workflow, version, input); the engine starts it in the same
transaction that parks the step, so a crash cannot leave a child without a waiting parent. The
child's output (its final steps' outputs by name) becomes the step's output.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from steps.executors.base import StepContext, StepResult, Wait, config_error, format_seconds


class SubflowExecutor:
    type: ClassVar[str] = "subflow"
    description: ClassVar[str] = (
        "Runs another workflow (by name, optionally a pinned version) as a child run; its output "
        "becomes this step's output. Cancelling the parent cancels the child."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["workflow"],
        "additionalProperties": False,
        "properties": {
            "workflow": {"type": "string", "minLength": 1, "description": "The child's name."},
            "version": {
                "type": "integer",
                "minimum": 1,
                "description": "Pin a version; the latest when absent.",
            },
            "input": {
                "description": "The child's run input; when absent, this step's data input "
                "(its parent's output)."
            },
        },
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: StepContext) -> StepResult:
        problem = config_error(self.config_schema, ctx.config)
        if problem:
            return StepResult.failure(problem, retryable=False)
        child_input = ctx.config.get("input", ctx.input)
        if child_input is None:
            child_input = {}
        until = datetime.now(UTC) + timedelta(seconds=ctx.timeout)
        return StepResult.waiting(
            Wait(
                kind="subflow",
                until=until,
                on_due=StepResult.failure(
                    f"sub-workflow '{ctx.config['workflow']}' did not finish within "
                    f"{format_seconds(ctx.timeout)}"
                ),
                data={
                    "workflow": ctx.config["workflow"],
                    "version": ctx.config.get("version"),
                    "input": child_input,
                },
            )
        )
