"""Running one step attempt: claim, render, execute, record. Called by the Django-Q2 task."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from flows.language.spec import StepSpec
from flows.language.templates import TemplateError, evaluate_condition, render_value
from runs import services
from runs.models import StepRun
from steps import guards
from steps.dispatch import Ticket, dispatch
from steps.executors.approval import approval_wait
from steps.executors.base import StepContext, StepResult, Wait
from steps.heartbeat import Heartbeat
from steps.logs import LogWriter
from steps.lua import ScriptError, evaluate_predicate
from steps.registry import UnknownStepType, get_executor
from steps.secrets import Masker, SecretError, SecretsView
from steps.worker_rules import step_worker

log = logging.getLogger(__name__)


def worker_name() -> str:
    """`<cluster>/<host>:<pid>` in a registered worker cluster (steps/workers.py), else host:pid."""
    return step_worker(settings.FURROW["WORKER_NAME"], socket.gethostname(), os.getpid())


def execute_chain(step_id: int, attempt: int) -> int:
    """Run the attempt, then, while within the inline budget, the single successor it readied.

    A chain of steps thus costs one queue round trip, not one per step. A successor on another
    queue is never run here: it goes to its own queue's cluster. Returns how many attempts ran
    here (a message handed on to another queue counts as none).
    """
    serving = settings.FURROW["WORKER_QUEUE"]
    deadline = time.monotonic() + settings.FURROW["INLINE_BUDGET"]
    ticket: Ticket | None = run_attempt(step_id, attempt, keep_one=True, serving=serving)
    ran = 1
    while ticket is not None:
        if ticket[2] != serving:
            dispatch([ticket])
            break
        ticket = run_attempt(
            ticket[0], ticket[1], keep_one=time.monotonic() < deadline, serving=serving
        )
        ran += 1
    return ran


def run_attempt(
    step_id: int, attempt: int, *, keep_one: bool = False, serving: str | None = None
) -> Ticket | None:
    """Claim and run one attempt. A stale or duplicate ticket is a no-op (returns None), and so
    is one for a queue other than `serving` (it is sent on to that queue; None: any queue)."""
    name = worker_name()
    claimed = services.claim(step_id, attempt, name, queue=serving)
    if claimed is None:
        return None
    step, spec = claimed.step, claimed.spec
    actor = f"worker:{name}"
    secrets = SecretsView()
    try:
        context = services.step_context(step, spec)
        if step.item_of_id is None and not _guard_passes(spec, context):
            return services.skip(step, attempt, "when is false", keep_one=keep_one, actor=actor)
        executor = get_executor(spec.type)
        if (
            spec.requires_approval is not None
            and step.item_of_id is None
            and not services.gate_approved(step)
        ):
            gate = render_value(dict(spec.requires_approval), context)
            result = StepResult.waiting(approval_wait(gate, spec.approval_timeout, gate=True))
            return services.finish(step, attempt, result, keep_one=keep_one, actor=actor)
        if step.item_of_id is None and spec.for_each is not None:
            return _fan_out(step, attempt, spec, context, secrets, keep_one=keep_one, actor=actor)
        config = _render_config(spec, executor, {**context, "secrets": secrets})
    except Exception as exc:  # whatever it is, the step fails with it instead of being stranded
        if not isinstance(
            exc, TemplateError | UnknownStepType | ScriptError | ValueError | SecretError
        ):
            log.exception("preparing step %s failed", step.name)
        message = _render_error(exc, secrets)
        masker = Masker(secrets.used.values())
        result = StepResult.failure(masker.text(message), retryable=False)
        return services.finish(step, attempt, result, keep_one=keep_one, actor=actor)
    cancel = threading.Event()
    writer = LogWriter(step, attempt, mask=_LiveMask(secrets), cancel=cancel)
    now = timezone.now()
    try:
        result = guards.admit(
            spec.type,
            config,
            breaker=spec.circuit_breaker,
            on_unhealthy=spec.on_unhealthy,
            now=now,
        )
        if result is None:
            with Heartbeat(step.pk, attempt, cancel):
                result = _execute(
                    executor,
                    StepContext(
                        run_id=str(step.run_id),
                        step_name=step.name,
                        attempt=attempt,
                        config=config,
                        timeout=_timeout(executor, spec, claimed.timeout),
                        log=writer,
                        input=services.data_input(spec, context),
                        context=context,
                        callback_url=_callback(executor, step, attempt, claimed.timeout),
                        secrets=secrets,
                        cancel=cancel,
                    ),
                )
            guards.record(
                spec.type, config, result, breaker=spec.circuit_breaker, now=timezone.now()
            )
    except Exception as exc:  # an executor bug must fail the step, not strand it
        log.exception("executor %s raised", spec.type)
        result = StepResult.failure(f"internal error in {spec.type} executor: {exc!r}")
    finally:
        writer.close()
    if secrets.used:
        masker = Masker(secrets.used.values())  # the executor may have read more (connector auth)
        config = masker.value(config)
        result = _masked(result, masker)
    return services.finish(step, attempt, result, config=config, keep_one=keep_one, actor=actor)


def _timeout(executor: Any, spec: StepSpec, claimed: float) -> float:
    """An approval without its own timeout waits for ever, not for the default step timeout."""
    if spec.timeout is None and getattr(executor, "waits_indefinitely", False):
        return math.inf
    return claimed


def _execute(executor: Any, ctx: StepContext) -> StepResult:
    result = executor.run(ctx)
    if ctx.cancel.is_set() and not result.ok:
        # Stopped from outside: the finish is fenced out anyway; say why in the attempt's record.
        return StepResult.failure(
            f"attempt {ctx.attempt} was stopped: the run was cancelled "
            "or the attempt was declared lost"
        )
    return result


def _guard_passes(spec: StepSpec, context: Mapping[str, Any]) -> bool:
    if spec.when is None:
        return True
    if isinstance(spec.when, Mapping):
        return evaluate_predicate(spec.when["lua"], context)
    return evaluate_condition(spec.when, context)


def _render_config(spec: StepSpec, executor: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """The step's `with` rendered against the context; an executor's raw keys stay as written."""
    raw_keys = getattr(executor, "raw_keys", frozenset())
    config = dict(spec.config)
    raw = {key: config.pop(key) for key in raw_keys if key in config}
    rendered = render_value(config, context, shell_quoted=executor.shell_quoted)
    return {**rendered, **raw}


def _fan_out(
    step: StepRun,
    attempt: int,
    spec: StepSpec,
    context: Mapping[str, Any],
    secrets: SecretsView,
    *,
    keep_one: bool,
    actor: str,
) -> tuple[int, int] | None:
    """A for_each step: render its arrays and hand the items to the engine; the step then waits."""
    assert spec.for_each is not None
    over = render_value(dict(spec.for_each.over), {**context, "secrets": secrets})
    items = services.expand_for_each(over)
    masker = Masker(secrets.used.values())
    result = StepResult.waiting(
        Wait(
            kind="items",
            until=None,
            on_due=StepResult.failure("for_each items did not finish"),
            data={"items": masker.value(items)},
        )
    )
    return services.finish(step, attempt, result, keep_one=keep_one, actor=actor)


def _callback(executor: Any, step: StepRun, attempt: int, timeout: float) -> str | None:
    if not getattr(executor, "needs_callback", False):
        return None
    expires = timezone.now() + timedelta(seconds=timeout + settings.FURROW["LEASE_GRACE"])
    return services.callback_url(services.issue_callback(step, attempt, expires))


def _render_error(exc: Exception, secrets: SecretsView) -> str:
    if secrets.missing and isinstance(exc, TemplateError):
        return f"unknown secret '{secrets.missing[0]}' (set it in the admin or with set_secret)"
    return str(exc)


def _masked(result: StepResult, masker: Masker) -> StepResult:
    return replace(
        result,
        output=masker.value(result.output),
        error=masker.text(result.error) if result.error else result.error,
    )


class _LiveMask:
    """Masks log lines with every secret read so far, including those an executor reads late."""

    def __init__(self, secrets: SecretsView) -> None:
        self._secrets = secrets
        self._masker = Masker(())
        self._seen = 0

    def __call__(self, text: str) -> str:
        if len(self._secrets.used) != self._seen:
            self._seen = len(self._secrets.used)
            self._masker = Masker(self._secrets.used.values())
        return self._masker.text(text)
