"""Running one step attempt: claim, render, execute, record. Called by the Django-Q2 task."""

from __future__ import annotations

import logging
import os
import socket
import time

from django.conf import settings

from flows.language.templates import TemplateError, evaluate_condition, render_value
from runs import services
from steps.executors.base import StepContext, StepResult
from steps.logs import LogWriter
from steps.registry import UnknownStepType, get_executor

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_chain(step_id: int, attempt: int) -> int:
    """Run the attempt, then, while within the inline budget, the single successor it readied.

    A chain of steps thus costs one queue round trip, not one per step. Returns how many
    attempts ran here.
    """
    deadline = time.monotonic() + settings.FURROW["INLINE_BUDGET"]
    ticket: tuple[int, int] | None = (step_id, attempt)
    ran = 0
    while ticket is not None:
        ticket = run_attempt(*ticket, keep_one=time.monotonic() < deadline)
        ran += 1
    return ran


def run_attempt(step_id: int, attempt: int, *, keep_one: bool = False) -> tuple[int, int] | None:
    """Claim and run one attempt. A stale or duplicate ticket is a no-op (returns None)."""
    name = worker_name()
    claimed = services.claim(step_id, attempt, name)
    if claimed is None:
        return None
    step, spec = claimed.step, claimed.spec
    actor = f"worker:{name}"
    try:
        context = services.step_context(step, spec)
        if spec.when is not None and not evaluate_condition(spec.when, context):
            return services.skip(step, attempt, "when is false", keep_one=keep_one, actor=actor)
        executor = get_executor(spec.type)
        config = render_value(dict(spec.config), context, shell_quoted=executor.shell_quoted)
    except (TemplateError, UnknownStepType) as exc:
        result = StepResult.failure(str(exc), retryable=False)
        return services.finish(step, attempt, result, keep_one=keep_one, actor=actor)
    writer = LogWriter(step, attempt)
    try:
        result = executor.run(
            StepContext(
                run_id=str(step.run_id),
                step_name=step.name,
                attempt=attempt,
                config=config,
                timeout=claimed.timeout,
                log=writer,
            )
        )
    except Exception as exc:  # an executor bug must fail the step, not strand it
        log.exception("executor %s raised", spec.type)
        result = StepResult.failure(f"internal error in {spec.type} executor: {exc!r}")
    finally:
        writer.close()
    return services.finish(step, attempt, result, config=config, keep_one=keep_one, actor=actor)
