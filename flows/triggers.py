"""Triggers: the only writer of Trigger rows, and what fires them.

Every fire starts its run with an idempotency key made of the trigger and what fired it (the
scheduled time, the upstream run, the webhook's delivery id), so however many tick loops or web
processes see the same fire, one run starts (runs.services.start_run's unique key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flows.language.errors import DefinitionError, Problem, format_path
from flows.language.inputs import InputError
from flows.language.schedule import MISSED_POLICIES, Schedule, ScheduleError, due
from flows.language.templates import TemplateError, check_syntax, render_value, template_strings
from flows.models import Trigger
from runs import hooks, services
from runs.engine.states import RunStatus
from runs.models import Event, Run

FIELDS = [
    "workflow",
    "name",
    "kind",
    "enabled",
    "input",
    "cron",
    "timezone",
    "missed",
    "slug",
    "auth",
    "secret",
    "after_workflow",
    "on_statuses",
]
"""What a person sets on a trigger (API and admin alike); the rest is the trigger's own record."""

CURSOR = "triggers"
BATCH = 200
ENDED = tuple(s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED))
SIGNATURE_HEADERS = ("X-Furrow-Signature", "X-Hub-Signature-256")
TOKEN_HEADER = "X-Furrow-Token"
DELIVERY_HEADERS = ("Idempotency-Key", "X-Furrow-Delivery", "X-GitHub-Delivery")
HIDDEN_HEADERS = {"authorization", "cookie", "x-furrow-token", *map(str.lower, SIGNATURE_HEADERS)}


class TriggerError(DefinitionError):
    """A trigger that cannot be saved; lists each problem at its field."""


class WebhookError(Exception):
    status = 400


class WebhookNotFound(WebhookError):
    status = 404


class WebhookUnauthorized(WebhookError):
    status = 401


class WebhookMisconfigured(WebhookError):
    status = 503


# Saving


def save_trigger(trigger: Trigger, *, actor: str = "system", event: str = "") -> Trigger:
    """Validate and save `trigger` (new or changed), recording who did it.

    A cron trigger's next fire time is computed from now, so enabling or changing a schedule
    never fires for times that passed before it.
    """
    problems = trigger_problems(trigger)
    if problems:
        raise TriggerError(problems)
    created = trigger.pk is None
    if trigger.kind == Trigger.Kind.CRON:
        trigger.next_fire_at = (
            _schedule(trigger).next_after(timezone.now()) if trigger.enabled else None
        )
    with transaction.atomic():
        if trigger.kind == Trigger.Kind.WORKFLOW and trigger.enabled and not _followers().exists():
            # The completion cursor rests while no trigger needs it; the first one starts it at
            # the end of the log, so no run that ended before it was made starts a follower.
            hooks.skip_to_end(hooks.event_cursor(CURSOR))
        trigger.save()
        _audit(trigger, event or ("trigger.created" if created else "trigger.changed"), actor)
    return trigger


def _followers() -> Any:
    return Trigger.objects.filter(kind=Trigger.Kind.WORKFLOW, enabled=True)


def set_enabled(trigger: Trigger, enabled: bool, *, actor: str = "system") -> Trigger:
    trigger.enabled = enabled
    event = "trigger.enabled" if enabled else "trigger.disabled"
    return save_trigger(trigger, actor=actor, event=event)


def delete_trigger(trigger: Trigger, *, actor: str = "system") -> None:
    with transaction.atomic():
        _audit(trigger, "trigger.deleted", actor)
        trigger.delete()


def _audit(trigger: Trigger, type_: str, actor: str) -> None:
    Event.objects.create(
        workflow_id=trigger.workflow_id,
        type=type_,
        actor=actor,
        data={"trigger": trigger.name, "kind": trigger.kind},
    )


def trigger_problems(trigger: Trigger) -> list[Problem]:
    problems: list[Problem] = []
    if trigger.kind not in Trigger.Kind.values:
        problems.append(Problem("kind", f"must be one of {', '.join(Trigger.Kind.values)}"))
    if not isinstance(trigger.input, dict):
        problems.append(Problem("input", "must be an object (the run's input)"))
    else:
        for path, source in template_strings(trigger.input, ("input",)):
            message = check_syntax(source)
            if message:
                problems.append(Problem(format_path(path), message))
    if trigger.kind == Trigger.Kind.CRON:
        if trigger.missed not in MISSED_POLICIES:
            problems.append(Problem("missed", f"must be one of {', '.join(MISSED_POLICIES)}"))
        try:
            Schedule(trigger.cron, trigger.timezone)
        except ScheduleError as exc:
            field = "timezone" if "time zone" in str(exc) else "cron"
            problems.append(Problem(field, str(exc)))
    elif trigger.kind == Trigger.Kind.WEBHOOK:
        if not trigger.slug:
            problems.append(
                Problem("slug", "a webhook needs a slug: it is served at /hooks/{slug}")
            )
        elif Trigger.objects.filter(slug=trigger.slug).exclude(pk=trigger.pk).exists():
            problems.append(Problem("slug", f"'{trigger.slug}' is taken by another trigger"))
        if trigger.auth not in ("hmac", "token"):
            problems.append(Problem("auth", "must be hmac or token"))
        if not trigger.secret:
            problems.append(Problem("secret", "name the Secret holding the webhook's key"))
    elif trigger.kind == Trigger.Kind.WORKFLOW:
        problems += _completion_problems(trigger)
    return problems


def _completion_problems(trigger: Trigger) -> list[Problem]:
    if trigger.after_workflow_id is None:
        return [Problem("after_workflow", "name the workflow whose runs end this one starts after")]
    statuses = trigger.on_statuses
    if not isinstance(statuses, list) or not statuses or not set(statuses) <= set(ENDED):
        return [Problem("on_statuses", f"a non-empty list of {', '.join(ENDED)}")]
    # A chain that comes back to its start would run for ever.
    edges: dict[int, set[int]] = {}
    others = Trigger.objects.filter(kind=Trigger.Kind.WORKFLOW).exclude(pk=trigger.pk)
    for upstream, downstream in others.values_list("after_workflow_id", "workflow_id"):
        edges.setdefault(upstream, set()).add(downstream)
    edges.setdefault(trigger.after_workflow_id, set()).add(trigger.workflow_id)
    seen, todo = set(), [trigger.workflow_id]
    while todo:
        current = todo.pop()
        if current == trigger.after_workflow_id:
            return [
                Problem(
                    "after_workflow", "this would make a cycle of workflows starting each other"
                )
            ]
        if current not in seen:
            seen.add(current)
            todo += edges.get(current, ())
    return []


def _schedule(trigger: Trigger) -> Schedule:
    return Schedule(trigger.cron, trigger.timezone)


def upcoming(trigger: Trigger, count: int = 5) -> list[datetime]:
    """The next fire times of an enabled cron trigger (UTC); empty for anything else."""
    if trigger.kind != Trigger.Kind.CRON or not trigger.enabled:
        return []
    start = trigger.next_fire_at or timezone.now()
    return [start, *_schedule(trigger).upcoming(start, count - 1)]


# Firing


def fire(trigger: Trigger, context: Mapping[str, Any], key: str) -> Run | None:
    """Start `trigger`'s run with its input rendered over `context`; None (and a
    `trigger.failed` event) when the input cannot be made."""
    try:
        input_ = render_value(trigger.input, context, path=("input",))
        run = services.start_run(
            trigger.workflow,
            input_,
            actor=f"trigger:{trigger.name}",
            source=f"trigger:{trigger.kind}",
            idempotency_key=key,
        )
    except (TemplateError, InputError, services.InvalidTransition) as exc:
        Event.objects.create(
            workflow_id=trigger.workflow_id,
            type="trigger.failed",
            actor=f"trigger:{trigger.name}",
            data={"trigger": trigger.name, "error": str(exc), "key": key},
        )
        return None
    if getattr(run, "created", True):
        Trigger.objects.filter(pk=trigger.pk).update(
            last_fired_at=timezone.now(), last_run=run, fires=F("fires") + 1
        )
    return run


def fire_due_schedules(now: datetime | None = None) -> int:
    """Fire the cron triggers due by `now`; the number of runs started. Safe to run anywhere."""
    now = now or timezone.now()
    due_now = Trigger.objects.filter(kind=Trigger.Kind.CRON, enabled=True, next_fire_at__lte=now)
    if not due_now.exists():  # the common case, without taking SQLite's write lock
        return 0
    started = 0
    with transaction.atomic():
        for trigger in due_now.select_for_update(skip_locked=True).select_related("workflow")[
            :BATCH
        ]:
            decision = due(_schedule(trigger), trigger.next_fire_at, now, trigger.missed)
            if decision.fire_at is not None:
                context = {"fire_time": decision.fire_at.isoformat(), "trigger": trigger.name}
                key = f"cron:{trigger.pk}:{decision.fire_at.isoformat()}"
                started += fire(trigger, context, key) is not None
            if decision.skipped:
                _audit_skipped(trigger, decision.skipped)
            Trigger.objects.filter(pk=trigger.pk).update(next_fire_at=decision.next_fire_at)
    return started


def _audit_skipped(trigger: Trigger, skipped: int) -> None:
    Event.objects.create(
        workflow_id=trigger.workflow_id,
        type="trigger.skipped",
        actor=f"trigger:{trigger.name}",
        data={"trigger": trigger.name, "missed_fires": skipped, "policy": trigger.missed},
    )


def fire_after_runs(now: datetime | None = None) -> int:
    """Start the runs that wait for other workflows' runs to end; the number started.

    Reads run-end events from a cursor of its own (with the hooks' gap tracking), so a run that
    ended while no tick loop was up still starts its followers, once.
    """
    now = now or timezone.now()
    if not _followers().exists():
        return 0  # no writes at all: on SQLite every pass would take the write lock
    cursor = hooks.event_cursor(CURSOR)
    if not hooks.unread(cursor, now).exists():
        return 0
    started = 0
    with transaction.atomic():
        cursor = type(cursor).objects.select_for_update().get(pk=cursor.pk)
        events = list(
            hooks.unread(cursor, now).order_by("pk").values_list("pk", "type", "run_id")[:BATCH]
        )
        ended = {run_id: type_[4:] for _, type_, run_id in events if type_ in _END_EVENTS}
        if ended:
            started = _start_followers(ended)
        cursor.last_event_id, cursor.gaps = hooks.advance(
            cursor.last_event_id,
            hooks.live_gaps(cursor.gaps, now),
            [pk for pk, *_ in events],
            now.timestamp(),
        )
        cursor.save(update_fields=["last_event_id", "gaps", "updated_at"])
    return started


_END_EVENTS = {f"run.{status}" for status in ENDED}


def _start_followers(ended: Mapping[Any, str]) -> int:
    runs = Run.objects.filter(pk__in=list(ended)).select_related("workflow")
    by_workflow: dict[int, list[Run]] = {}
    for run in runs:
        by_workflow.setdefault(run.workflow_id, []).append(run)
    followers = (
        _followers().filter(after_workflow_id__in=list(by_workflow)).select_related("workflow")
    )
    started = 0
    for trigger in followers:
        for run in by_workflow[trigger.after_workflow_id]:
            if ended[run.pk] not in trigger.on_statuses:
                continue
            context = {"run": _run_context(run)}
            started += fire(trigger, context, f"after:{trigger.pk}:{run.pk}") is not None
    return started


def _run_context(run: Run) -> dict[str, Any]:
    return {
        "id": str(run.pk),
        "workflow": run.workflow.name,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
    }


# Webhooks


def receive_webhook(slug: str, body: bytes, headers: Mapping[str, str]) -> Run:
    """Verify a webhook delivery and start its run. Raises a WebhookError (nothing started)."""
    trigger = (
        Trigger.objects.filter(slug=slug, kind=Trigger.Kind.WEBHOOK, enabled=True)
        .select_related("workflow")
        .first()
    )
    if trigger is None:
        raise WebhookNotFound(f"no enabled webhook '{slug}'")
    _verify(trigger, body, headers)
    payload = _payload(body)
    delivery = next((headers[h] for h in DELIVERY_HEADERS if headers.get(h)), "")
    key = f"hook:{trigger.pk}:{delivery}"[:200] if delivery else ""
    context = {
        "payload": payload,
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS},
    }
    try:
        input_ = render_value(trigger.input, context, path=("input",))
    except TemplateError as exc:
        raise WebhookError(f"the payload does not fit the trigger's input mapping: {exc}") from None
    return services.start_run(
        trigger.workflow,
        input_,
        actor=f"trigger:{trigger.name}",
        source="trigger:webhook",
        idempotency_key=key,
    )


def _verify(trigger: Trigger, body: bytes, headers: Mapping[str, str]) -> None:
    from steps.secrets import SecretError, get_values

    try:
        secret = get_values([trigger.secret]).get(trigger.secret)
    except SecretError:
        secret = None
    if not secret:
        raise WebhookMisconfigured(f"webhook '{trigger.slug}' has no usable secret")
    if trigger.auth == "token":
        bearer = headers.get("Authorization", "")
        sent = headers.get(TOKEN_HEADER) or (bearer[7:] if bearer.startswith("Bearer ") else "")
        if not sent or not hmac.compare_digest(sent.encode(), secret.encode()):
            raise WebhookUnauthorized("missing or wrong token")
        return
    sent = next((headers[h] for h in SIGNATURE_HEADERS if headers.get(h)), "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not sent or not hmac.compare_digest(sent.strip().lower(), expected):
        raise WebhookUnauthorized("missing or wrong signature (X-Furrow-Signature: sha256=<hex>)")


def _payload(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(f"the body must be JSON: {exc}") from None
