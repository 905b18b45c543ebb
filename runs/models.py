"""Execution state: runs, their steps, the append-only event log and log lines."""

from __future__ import annotations

import uuid

from django.conf import settings
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
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Run lists: newest first, per workflow and per status.
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_recent"),
            models.Index(fields=["status", "-created_at"], name="run_status_recent"),
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
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a retrying step is due."
    )
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
