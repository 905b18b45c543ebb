"""Execution state: runs, their steps, the append-only event log and log lines."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from runs.engine.states import RunStatus, StepStatus


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey("flows.Workflow", on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey(
        "flows.WorkflowVersion", on_delete=models.PROTECT, related_name="runs"
    )
    status = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in RunStatus], default=RunStatus.QUEUED
    )
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    source = models.CharField(max_length=32, default="api", help_text="api, admin, cli, bench, ...")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    parent_step = models.ForeignKey(
        "StepRun",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="child_runs",
        help_text="The subflow step that started this run.",
    )
    depth = models.PositiveSmallIntegerField(
        default=0, help_text="Subflow nesting: 0 for a top run."
    )
    idempotency_key = models.CharField(
        max_length=200, blank=True, help_text="Starting again with the same key returns this run."
    )
    priority = models.PositiveSmallIntegerField(
        default=5, help_text="1-10; among queued runs, higher starts first."
    )
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="The run fails if it has not ended by then."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Run lists: newest first, per workflow and per status.
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_recent"),
            models.Index(fields=["status", "-created_at"], name="run_status_recent"),
            # The admission queue: a workflow's queued runs by priority, then age.
            models.Index(
                fields=["workflow", "status", "-priority", "created_at"], name="run_queue"
            ),
            # The tick loop: runs past their deadline.
            models.Index(fields=["status", "deadline_at"], name="run_deadline"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.name} run {str(self.id)[:8]}"


class StepRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    position = models.PositiveIntegerField(help_text="Topological order within the workflow.")
    status = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in StepStatus], default=StepStatus.PENDING
    )
    attempt = models.PositiveIntegerField(
        default=0,
        help_text="The current (or last) attempt; a queue message for another is ignored.",
    )
    worker = models.CharField(max_length=200, blank=True)
    queue = models.CharField(
        max_length=50,
        default="default",
        help_text="The worker queue that runs this step (copied from the definition): only a "
        "worker serving it claims the step.",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a retrying step is due, or when a waiting step times out or wakes.",
    )
    waiting = models.JSONField(
        null=True,
        blank=True,
        help_text="While waiting: its kind (callback, timer, subflow, items), what ends it when due.",
    )
    branch = models.JSONField(
        null=True, blank=True, help_text="The successors a condition chose; null means all."
    )
    deferrals = models.PositiveIntegerField(
        default=0,
        help_text="Attempts put back without running (rate limit, open circuit): not counted "
        "against the retry policy.",
    )
    item_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="items",
        help_text="The for_each step this row is one item of.",
    )
    item_index = models.PositiveIntegerField(null=True, blank=True)
    item = models.JSONField(null=True, blank=True, help_text="This item's value.")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    config = models.JSONField(
        null=True, blank=True, help_text="The step's rendered `with` of the last attempt."
    )
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            # Also the index for loading a run's steps in order.
            models.UniqueConstraint(fields=["run", "name"], name="unique_step_per_run"),
        ]
        indexes = [
            # The tick loop: due retries (status, next_attempt_at), lost leases (status, lease_expires_at),
            # stranded ready steps (status, dispatched_at).
            models.Index(fields=["status", "next_attempt_at"], name="step_due"),
            models.Index(fields=["status", "lease_expires_at"], name="step_lease"),
            models.Index(fields=["status", "dispatched_at"], name="step_dispatched"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def spec_name(self) -> str:
        """The definition's step name: an item row `fetch[3]` runs step `fetch`."""
        return self.name.partition("[")[0]


class Event(models.Model):
    """One row per state transition, never updated: the audit trail and the stream's cursor."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    workflow = models.ForeignKey(
        "flows.Workflow", null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    type = models.CharField(
        max_length=64, help_text="e.g. run.running, step.succeeded, workflow.published"
    )
    actor = models.CharField(max_length=200, default="system")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # A run's events from a cursor: WHERE run_id = ? AND id > ? ORDER BY id.
            models.Index(fields=["run", "id"], name="event_run_cursor"),
            models.Index(fields=["workflow", "id"], name="event_workflow_cursor"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.type}"


class LogLine(models.Model):
    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_lines")
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="log_lines"
    )
    attempt = models.PositiveIntegerField(default=0)
    stream = models.CharField(max_length=16, default="stdout", help_text="stdout, stderr or system")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # A run's log from a cursor, and one step's log.
            models.Index(fields=["run", "id"], name="log_run_cursor"),
            models.Index(fields=["step_run", "id"], name="log_step_cursor"),
        ]

    def __str__(self) -> str:
        return self.text[:80]


class Callback(models.Model):
    """A single-use token that completes one waiting attempt (http_async)."""

    token_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the token.")
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="callbacks")
    attempt = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(
        null=True,
        blank=True,
        help_text="What the callback brought, kept when it arrives before the step is waiting.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"callback for {self.step_run_id} attempt {self.attempt}"


class Approval(models.Model):
    """A decision a person owes a step: an `approval` step, or the gate of `requires_approval`."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="approvals")
    attempt = models.PositiveIntegerField()
    kind = models.CharField(
        max_length=8,
        choices=[("approval", "approval step"), ("gate", "gate before the step")],
    )
    status = models.CharField(
        max_length=8,
        choices=[
            ("pending", "pending"),
            ("decided", "decided"),
            ("expired", "expired"),
            ("dropped", "dropped"),
        ],
        default="pending",
    )
    decision = models.CharField(
        max_length=8, blank=True, choices=[("approve", "approve"), ("reject", "reject")]
    )
    approvers = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)
    form = models.JSONField(null=True, blank=True, help_text="JSON Schema of the answers.")
    default = models.CharField(max_length=8, default="reject")
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True, help_text="The answers to the form.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_approval", "Can approve or reject any pending approval")]
        indexes = [
            # The pending-approvals inbox, newest first.
            models.Index(fields=["status", "-created_at"], name="approval_inbox"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.step_run.name} ({self.status})"


class DeadLetter(models.Model):
    """A step that exhausted its retries under a dead-letter policy, kept for a person to handle."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="dead_letters")
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="dead_letters")
    attempts = models.PositiveIntegerField(help_text="Attempts made before it was dead-lettered.")
    error = models.TextField()
    config = models.JSONField(
        null=True, blank=True, help_text="The rendered input of its last attempt."
    )
    status = models.CharField(
        max_length=10,
        choices=[("open", "open"), ("requeued", "requeued"), ("discarded", "discarded")],
        default="open",
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="dead_letter_queue")]

    def __str__(self) -> str:
        return f"dead letter: {self.step_run.name} ({self.status})"


# Outbound event hooks (runs.hooks): endpoints that receive chosen events as signed JSON POSTs.
# Rows are written by runs.hooks only (and the admin's endpoint form); README "Outbound event hooks".

HOOK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# fnmatch patterns over event types: letters, digits, `.`, `_`, `-`, and the wildcards `*`, `?`, `[]`.
HOOK_PATTERN_PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")


def validate_hook_url(url: str) -> None:
    """Only http and https with a host: a hook must never read a file or another scheme."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"url must be http or https with a host: {url[:200]!r}")


def validate_event_patterns(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError(
            'a non-empty list of event type patterns, e.g. ["run.*", "step.failed"]'
        )
    for pattern in value:
        if not isinstance(pattern, str) or not HOOK_PATTERN_PATTERN.match(pattern):
            raise ValidationError(
                f"{pattern!r} is not an event type pattern (letters, digits, . _ - and the "
                "wildcards * ? [])"
            )


def validate_workflow_patterns(value: Any) -> None:
    if not isinstance(value, list):
        raise ValidationError('a list of workflow names or patterns, e.g. ["release", "etl-*"]')
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValidationError(f"{pattern!r} is not a workflow name or pattern")


class HookStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed (given up)"


class HookEndpoint(models.Model):
    """A URL that receives the events matching `event_types` (and `workflows`), signed with the
    value of the Furrow secret named `secret`. The key itself is never stored here."""

    # Unique, which is also the index for the lookups by name (API routes).
    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[
            RegexValidator(
                HOOK_NAME_PATTERN,
                "a hook name is letters, digits, _ . - (starting with a letter or digit)",
            )
        ],
    )
    url = models.CharField(max_length=500, validators=[validate_hook_url])
    event_types = models.JSONField(
        default=list,
        validators=[validate_event_patterns],
        help_text='Patterns: ["run.*", "step.failed", "approval.decided"] or ["*"].',
    )
    workflows = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_workflow_patterns],
        help_text="Workflow names or patterns; empty: every workflow, and events of none.",
    )
    secret = models.CharField(
        max_length=100,
        blank=True,
        help_text="NAME of the Furrow secret whose value signs each delivery; blank: unsigned.",
    )
    enabled = models.BooleanField(default=True)
    timeout = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(60.0)],
        help_text="Seconds an attempt may take.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=8,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Attempts before a delivery is given up (failed).",
    )
    source = models.CharField(
        max_length=8,
        choices=[("admin", "admin"), ("settings", "FURROW_HOOKS")],
        default="admin",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        secrets = apps.get_model("steps", "Secret")
        if self.secret and not secrets.objects.filter(name=self.secret).exists():
            raise ValidationError({"secret": f"there is no secret named {self.secret!r}"})


class HookDelivery(models.Model):
    """One event for one endpoint, with every attempt to send it in `attempt_log`."""

    endpoint = models.ForeignKey(HookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+")
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=9, choices=HookStatus.choices, default=HookStatus.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts made (since the last redelivery); the claim's fence."
    )
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a pending delivery is (next) due."
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempt_log = models.JSONField(
        default=list,
        blank=True,
        help_text="[{attempt, at, status_code, error, duration_ms}], and redeliveries.",
    )
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Each event reaches an endpoint once; also the index for the endpoint's deliveries.
            models.UniqueConstraint(fields=["endpoint", "event"], name="unique_hook_delivery"),
        ]
        indexes = [
            # The delivery pass: WHERE status = 'pending' AND next_attempt_at <= now.
            models.Index(fields=["status", "next_attempt_at"], name="hook_delivery_due"),
            # The API's list: one endpoint's deliveries by status, newest first.
            models.Index(fields=["endpoint", "status", "-id"], name="hook_delivery_list"),
        ]
        verbose_name_plural = "hook deliveries"

    def __str__(self) -> str:
        return f"{self.endpoint_id}: event {self.event_id} ({self.status})"


class HookCursor(models.Model):
    """How far the hook pass has read the event log; locked while it creates deliveries, so each
    event is enqueued once however many tick loops run. `gaps` holds ids below the cursor that
    were not visible yet (a transaction still open when a later one committed):
    [[event_id, first_seen_unix_seconds]], looked for again for `runs.hooks.GAP_GRACE` seconds."""

    # Unique, which is also the index for the lookup by name.
    name = models.CharField(max_length=50, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    gaps = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at event {self.last_event_id}"
