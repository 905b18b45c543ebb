"""A step that does nothing and returns its config: handy for joins, gates and tests."""

from __future__ import annotations

from typing import Any, ClassVar

from steps.executors.base import StepContext, StepResult


class NoopExecutor:
    type: ClassVar[str] = "noop"
    description: ClassVar[str] = (
        "Does nothing and returns its `with` as output: joins, placeholders, tests."
    )
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    shell_quoted: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: StepContext) -> StepResult:
        return StepResult.success(dict(ctx.config))
