"""The admin is for looking at runs; its actions (cancel, pause, resume, rerun, approve, reject,
requeue and discard dead letters) call runs.services and runs.recovery."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from flows.admin import pretty_json
from flows.api_access import narrow
from runs import recovery, services
from runs.dashboard import first_line
from runs.management.commands.approvals import describe_approvers
from runs.models import Approval, DeadLetter, Event, LogLine, Run, StepRun


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class StepRunInline(ReadOnlyInline):
    model = StepRun
    fields = [
        "name",
        "type",
        "status",
        "attempt",
        "started_at",
        "finished_at",
        "output_pretty",
        "error",
    ]
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="output")
    def output_pretty(self, obj: StepRun) -> str:
        return pretty_json(obj.output)


class EventInline(ReadOnlyInline):
    model = Event
    fk_name = "run"
    fields = ["id", "created_at", "type", "step_run", "actor", "data"]
    readonly_fields = fields
    ordering = ["id"]


class PendingApprovalInline(ReadOnlyInline):
    """What the run waits for people to decide; deciding is the Approval list's actions."""

    model = Approval
    fk_name = "run"
    verbose_name_plural = "pending approvals"
    fields = ["step_name", "kind", "message", "approvers_summary", "expires_at"]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        return super().get_queryset(request).filter(status="pending").select_related("step_run")

    @admin.display(description="step")
    def step_name(self, obj: Approval) -> str:
        return obj.step_run.name

    @admin.display(description="approvers")
    def approvers_summary(self, obj: Approval) -> str:
        return describe_approvers(obj.approvers)


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through services (actions, API, commands), never through a form.

    Staff see the rows of the workflows they may view (flows/access.py), like the API.
    """

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return narrow(super().get_queryset(request), request.user)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # The actions that change runs act only on the workflows the user may run, as the API.
        actions = super().get_actions(request)
        for name, (func, action_name, description) in list(actions.items()):
            if "control" in getattr(func, "allowed_permissions", ()):
                actions[name] = (_runnable_only(func), action_name, description)
        return actions

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_control_permission(self, request: HttpRequest) -> bool:
        # The actions that change a run (or its dead letters) need runs.change_run although the
        # change form is off: view-only staff may look but not act.
        return request.user.has_perm("runs.change_run")


def _runnable_only(action: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(action)
    def narrowed(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
        allowed = narrow(queryset, request.user, "run")
        left_out = queryset.count() - allowed.count()
        if left_out:
            message = f"{left_out} selected item(s) left alone: you may not run their workflow."
            modeladmin.message_user(request, message, messages.ERROR)
        action(modeladmin, request, allowed)

    return narrowed


def run_link(run_id: Any) -> str:
    """A link to the run's admin page, labelled with the start of its id."""
    url = reverse("admin:runs_run_change", args=[run_id])
    return format_html("<a href='{}'>{}</a>", url, str(run_id)[:8])


Outcome = tuple[str, int]
"""What one item of a bulk action came to: the message for the user and its level."""


def apply_one(label: str, change: Callable[..., str], *args: Any) -> Outcome:
    """Apply one item's change: `label: <what it did>`, or `label: <why the service refused>`."""
    try:
        done = change(*args)
    except services.InvalidTransition as exc:
        return f"{label}: {exc}", messages.ERROR
    return format_html("{}: {}", label, done), messages.SUCCESS


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "workflow",
        "version_number",
        "status",
        "priority",
        "rerun_of_link",
        "source",
        "created_at",
        "finished_at",
        "page_link",
    ]
    # Only the workflows of the rows shown: the filter must not list workflows one may not view.
    list_filter = ["status", ("workflow", admin.RelatedOnlyFieldListFilter), "source"]
    search_fields = ["id", "workflow__name"]
    list_select_related = ["workflow", "version"]
    date_hierarchy = "created_at"
    fields = [
        "id",
        "workflow",
        "version",
        "status",
        "priority",
        "idempotency_key",
        "rerun_of_link",
        "source",
        "created_by",
        "created_at",
        "started_at",
        "deadline_at",
        "finished_at",
        "error",
        "input_pretty",
        "output_pretty",
        "log_tail",
    ]
    readonly_fields = fields
    inlines = [PendingApprovalInline, StepRunInline, EventInline]
    actions = ["cancel", "pause", "resume", "rerun"]

    @admin.action(description="Cancel the selected runs", permissions=["control"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        actor = f"user:{request.user.get_username()}"
        cancelled, ended = 0, []
        for run in queryset:
            try:
                services.cancel_run(run, actor=actor, reason="cancelled in the admin")
                cancelled += 1
            except services.InvalidTransition:
                # cancel_run reloaded the run before refusing, so its status is the current one.
                ended.append(f"{run} ({run.status})")
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} run(s).", messages.SUCCESS)
        if ended:
            self.message_user(
                request, f"Already ended, left alone: {', '.join(ended)}.", messages.WARNING
            )

    @admin.action(description="Pause the selected runs", permissions=["control"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        actor = f"user:{request.user.get_username()}"
        for run in queryset:
            outcome = apply_one(str(run), pause_in_admin, run, actor)
            self.message_user(request, *outcome)

    @admin.action(description="Resume the selected runs", permissions=["control"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        actor = f"user:{request.user.get_username()}"
        for run in queryset:
            outcome = apply_one(str(run), resume_in_admin, run, actor)
            self.message_user(request, *outcome)

    @admin.action(
        description="Rerun the selected runs from their failed steps", permissions=["control"]
    )
    def rerun(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        for run in queryset:
            outcome = apply_one(str(run), rerun_in_admin, run, request.user)
            self.message_user(request, *outcome)

    @admin.display(description="run", ordering="created_at")
    def short_id(self, obj: Run) -> str:
        return str(obj.pk)[:8]

    def view_on_site(self, obj: Run) -> str:
        return reverse("admin:run-page", args=[obj.pk])

    @admin.display(description="page")
    def page_link(self, obj: Run) -> str:
        return format_html('<a href="{}">graph, steps, logs</a>', self.view_on_site(obj))

    @admin.display(description="version")
    def version_number(self, obj: Run) -> int:
        return obj.version.number

    @admin.display(description="rerun of")
    def rerun_of_link(self, obj: Run) -> str:
        # The id is on the row already: linking to the old run costs no query.
        return run_link(obj.rerun_of_id) if obj.rerun_of_id else "-"

    @admin.display(description="input")
    def input_pretty(self, obj: Run) -> str:
        return pretty_json(obj.input)

    @admin.display(description="output")
    def output_pretty(self, obj: Run) -> str:
        return pretty_json(obj.output)

    @admin.display(description="log (last 200 lines)")
    def log_tail(self, obj: Run) -> str:
        lines = list(obj.log_lines.select_related("step_run").order_by("-id")[:200])[::-1]
        if not lines:
            return "-"
        body = format_html_join(
            "\n",
            "[{}] {}",
            ((line.step_run.name if line.step_run else "-", line.text) for line in lines),
        )
        link = reverse("admin:runs_logline_changelist") + f"?run__id__exact={obj.pk}"
        return format_html("<pre class='furrow-log'>{}</pre><a href='{}'>all lines</a>", body, link)


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "run",
        "type",
        "status",
        "attempt",
        "queue",
        "worker",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "type", "queue"]
    search_fields = ["name", "run__id"]
    list_select_related = ["run__workflow"]
    raw_id_fields = ["run"]
    fields = [
        "run",
        "name",
        "type",
        "position",
        "status",
        "attempt",
        "worker",
        "lease_expires_at",
        "next_attempt_at",
        "started_at",
        "finished_at",
        "error",
        "config_pretty",
        "output_pretty",
    ]
    readonly_fields = fields

    @admin.display(description="rendered config")
    def config_pretty(self, obj: StepRun) -> str:
        return pretty_json(obj.config)

    @admin.display(description="output")
    def output_pretty(self, obj: StepRun) -> str:
        return pretty_json(obj.output)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "type", "run", "step_run", "workflow", "actor"]
    list_filter = ["type"]
    search_fields = ["run__id", "type", "actor"]
    list_select_related = ["run__workflow", "step_run", "workflow"]
    raw_id_fields = ["run", "step_run", "workflow"]


@admin.register(LogLine)
class LogLineAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "run", "step_run", "stream", "text"]
    list_filter = ["stream"]
    search_fields = ["text"]
    list_select_related = ["run__workflow", "step_run"]
    raw_id_fields = ["run", "step_run"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = [
        "workflow_name",
        "run_link",
        "step_name",
        "kind",
        "status",
        "decision",
        "approvers_summary",
        "expires_at",
        "decided_by",
        "decided_at",
    ]
    list_filter = ["status", "kind", "decision"]
    search_fields = ["step_run__name", "run__workflow__name", "run__id"]
    list_select_related = ["run__workflow", "step_run", "decided_by"]
    fields = [
        "run",
        "step_run",
        "attempt",
        "kind",
        "status",
        "decision",
        "approvers_pretty",
        "message",
        "form_pretty",
        "default",
        "expires_at",
        "decided_by",
        "decided_at",
        "comment",
        "data_pretty",
        "created_at",
    ]
    readonly_fields = fields
    actions = ["approve", "reject"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an approval is part of the run's record; cancelling a run drops them

    @admin.display(description="workflow", ordering="run__workflow__name")
    def workflow_name(self, obj: Approval) -> str:
        return obj.run.workflow.name

    @admin.display(description="run")
    def run_link(self, obj: Approval) -> str:
        return run_link(obj.run_id)

    @admin.display(description="step", ordering="step_run__name")
    def step_name(self, obj: Approval) -> str:
        return obj.step_run.name

    @admin.display(description="approvers")
    def approvers_summary(self, obj: Approval) -> str:
        return describe_approvers(obj.approvers)

    @admin.display(description="approvers")
    def approvers_pretty(self, obj: Approval) -> str:
        return pretty_json(obj.approvers)

    @admin.display(description="form")
    def form_pretty(self, obj: Approval) -> str:
        return pretty_json(obj.form)

    @admin.display(description="answers")
    def data_pretty(self, obj: Approval) -> str:
        return pretty_json(obj.data)

    @admin.action(description="Approve the selected pending approvals")
    def approve(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        for approval in queryset:
            self.message_user(request, *decide_in_admin(approval, "approve", request.user))

    @admin.action(description="Reject the selected pending approvals")
    def reject(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        for approval in queryset:
            self.message_user(request, *decide_in_admin(approval, "reject", request.user))


PAST = {"approve": "approved", "reject": "rejected"}


def decide_in_admin(approval: Approval, decision: str, user: Any) -> tuple[str, int]:
    """Decide one approval from a bulk action: the message for the user and its level."""
    step = approval.step_run.name
    label = f"{approval.run} step '{step}'"
    # Checked here because services.decide picks the step's *pending* approval: a decided row
    # selected in the list must not decide a newer approval of the same step.
    if approval.status != "pending":
        return f"{label}: already {approval.status}, left alone.", messages.WARNING
    if decision == "approve" and approval.form:
        # A bulk action has no way to ask the form's questions; approving with defaults would
        # answer for the approver.
        return (
            f"{label}: skipped, its form needs answers: approve it through the API "
            f"(POST /api/v1/runs/{approval.run_id}/approvals/{step}) or "
            f"`manage.py approve ... --data`.",
            messages.WARNING,
        )
    try:
        services.decide(approval.run, step, decision, user=user, comment="decided in the admin")
    except (services.InvalidTransition, services.NotAnApprover, services.ApprovalDataError) as exc:
        return f"{label}: {exc}", messages.ERROR
    return f"{label}: {PAST[decision]}.", messages.SUCCESS


def pause_in_admin(run: Run, actor: str) -> str:
    services.pause_run(run, actor=actor)
    return "paused; its running steps finish, nothing new starts."


def resume_in_admin(run: Run, actor: str) -> str:
    services.resume_run(run, actor=actor)
    return "resumed."


def rerun_in_admin(run: Run, user: Any) -> str:
    new = recovery.rerun(run, user=user, actor=f"user:{user.get_username()}")
    return format_html("rerun as {} ({}).", run_link(new.pk), new.status)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Steps that ran out of attempts under a dead-letter policy; requeue or discard each one."""

    list_display = [
        "workflow_name",
        "run_link",
        "step_name",
        "attempts",
        "error_summary",
        "status",
        "created_at",
        "resolved_by",
    ]
    list_filter = ["status"]
    search_fields = ["step_run__name", "run__workflow__name", "run__id"]
    list_select_related = ["run__workflow", "step_run", "resolved_by"]
    fields = [
        "run_link",
        "workflow_name",
        "step_run",
        "attempts",
        "status",
        "error_text",
        "config_pretty",
        "created_at",
        "resolved_by",
        "resolved_at",
    ]
    readonly_fields = fields
    actions = ["requeue", "discard"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # part of the run's record: discarding closes a letter and keeps it

    @admin.display(description="workflow", ordering="run__workflow__name")
    def workflow_name(self, obj: DeadLetter) -> str:
        return obj.run.workflow.name

    @admin.display(description="run")
    def run_link(self, obj: DeadLetter) -> str:
        return run_link(obj.run_id)

    @admin.display(description="step", ordering="step_run__name")
    def step_name(self, obj: DeadLetter) -> str:
        return obj.step_run.name

    @admin.display(description="error")
    def error_summary(self, obj: DeadLetter) -> str:
        return first_line(obj.error, limit=120)

    @admin.display(description="error")
    def error_text(self, obj: DeadLetter) -> str:
        # A <pre>, because shell errors carry line breaks and stderr tails.
        return format_html("<pre class='furrow-log'>{}</pre>", obj.error)

    @admin.display(description="rendered config of the last attempt")
    def config_pretty(self, obj: DeadLetter) -> str:
        return pretty_json(obj.config)

    @admin.action(description="Requeue the selected dead letters", permissions=["control"])
    def requeue(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        for letter in queryset:
            outcome = apply_one(letter_label(letter), requeue_in_admin, letter, request.user)
            self.message_user(request, *outcome)

    @admin.action(description="Discard the selected dead letters", permissions=["control"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        for letter in queryset:
            outcome = apply_one(letter_label(letter), discard_in_admin, letter, request.user)
            self.message_user(request, *outcome)


def letter_label(letter: DeadLetter) -> str:
    return f"dead letter {letter.pk} ({letter.run} step '{letter.step_run.name}')"


def requeue_in_admin(letter: DeadLetter, user: Any) -> str:
    run = recovery.requeue_dead_letter(letter, user=user, actor=f"user:{user.get_username()}")
    return f"requeued; the step runs again and the run is {run.status}."


def discard_in_admin(letter: DeadLetter, user: Any) -> str:
    recovery.discard_dead_letter(letter, user=user, actor=f"user:{user.get_username()}")
    return "discarded."


from runs import hooks_admin  # noqa: E402,F401
