"""A person decides: the step waits, holding no worker, until someone allowed approves or rejects.

The decision (with its comment and the answers to the optional form) becomes the output. With a
`timeout`, the `default` decision is taken when nobody decided in time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from flows.language.schema import APPROVAL_CONFIG
from steps.executors.base import StepContext, StepResult, Wait, config_error


class ApprovalExecutor:
    type: ClassVar[str] = "approval"
    description: ClassVar[str] = (
        "Waits (no worker held) for an allowed person to approve or reject, with an optional "
        "form; the decision becomes the output; on timeout the default decision applies."
    )
    config_schema: ClassVar[dict[str, Any]] = APPROVAL_CONFIG
    shell_quoted: ClassVar[frozenset[str]] = frozenset()
    waits_indefinitely: ClassVar[bool] = True
    """Without its own `timeout` it waits for a decision for ever (no default step timeout)."""

    def run(self, ctx: StepContext) -> StepResult:
        problem = config_error(self.config_schema, ctx.config)
        if problem:
            return StepResult.failure(problem, retryable=False)
        timeout = ctx.timeout if math.isfinite(ctx.timeout) else None
        return StepResult.waiting(approval_wait(ctx.config, timeout, gate=False))


def approval_wait(config: dict[str, Any] | Any, timeout: float | None, *, gate: bool) -> Wait:
    """What an approval (or a gate before a step) waits for; `timeout` None waits for ever."""
    until = datetime.now(UTC) + timedelta(seconds=timeout) if timeout is not None else None
    return Wait(
        kind="gate" if gate else "approval",
        until=until,
        on_due=StepResult.failure("no decision in time"),  # the engine applies `default`
        data={
            "approvers": dict(config.get("approvers", {})),
            "message": config.get("message", ""),
            "form": config.get("form"),
            "default": config.get("default", "reject"),
        },
    )
