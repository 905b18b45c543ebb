"""The catalogue in the admin: workflows (pause and resume are actions) and their versions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from flows import access, grants, triggers
from flows import services as flow_services
from flows.api_access import narrow
from flows.grants import describe
from flows.language.errors import DefinitionError
from flows.language.inputs import InputError
from flows.models import Trigger, Workflow, WorkflowGrant, WorkflowVersion
from runs import services
from runs.engine.states import RunStatus
from runs.models import Event


def pretty_json(value: Any) -> str:
    return format_html(
        "<pre class='furrow-json'>{}</pre>",
        json.dumps(value, indent=2, sort_keys=False, default=str),
    )


class ScopedAdmin(admin.ModelAdmin):
    """Staff see the workflows they may view (flows/access.py), like the API."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return narrow(super().get_queryset(request), request.user)


class GrantInline(admin.TabularInline):
    model = WorkflowGrant
    fields = ["user", "group", "role", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0
    autocomplete_fields: list[str] = []


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    fields = ["number", "content_hash", "created_at", "created_by"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Workflow)
class WorkflowAdmin(ScopedAdmin):
    list_display = ["name", "description", "latest_version", "paused", "updated_at", "page_link"]
    list_filter = ["paused"]
    search_fields = ["name", "description"]
    # `paused` changes only through the actions: the service records the event and admits the
    # queued runs on resume, which saving a form would not.
    readonly_fields = ["name", "latest_version", "paused", "created_at", "updated_at"]
    fields = ["name", "description", "latest_version", "paused", "created_at", "updated_at"]
    list_select_related = ["latest_version__workflow"]
    inlines = [GrantInline, VersionInline]
    actions = ["run_now", "pause", "resume"]

    def has_add_permission(self, request: Any) -> bool:
        return False  # workflows are published (API, import_workflows), not typed into a form

    def view_on_site(self, obj: Workflow) -> str:
        return reverse("admin:workflow-page", args=[obj.name])

    @admin.display(description="page")
    def page_link(self, obj: Workflow) -> str:
        return format_html('<a href="{}">graph, runs, editor</a>', self.view_on_site(obj))

    @admin.action(description="Run the selected workflows now, with their default input")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset.select_related("latest_version"):
            self.message_user(request, *start_now(workflow, request.user))

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not WorkflowGrant:
            super().save_formset(request, form, formset, change)
            return
        # Grants change who may do what: each change is an event with its actor (the audit).
        actor = f"user:{request.user.get_username()}"
        rows = formset.save(commit=False)
        for row in formset.deleted_objects:
            grants.revoke(row, actor=actor)
        for row in rows:
            kind = "grant.changed" if row.pk else "grant.added"
            row.save()
            Event.objects.create(
                workflow_id=row.workflow_id, type=kind, actor=actor, data=describe(row)
            )

    @admin.action(
        description="Pause the selected workflows (new runs queue)", permissions=["change"]
    )
    def pause(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            self.message_user(request, *switch(workflow, pause_one, request.user))

    @admin.action(description="Resume the selected workflows", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            self.message_user(request, *switch(workflow, resume_one, request.user))


def switch(
    workflow: Workflow, change: Callable[[Workflow, str], str], user: Any
) -> tuple[str, int]:
    """Pause or resume one workflow: the message for the user and its level."""
    try:
        done = change(workflow, f"user:{user.get_username()}")
    except services.InvalidTransition as exc:
        return f"{workflow}: {exc}", messages.ERROR
    return f"{workflow}: {done}", messages.SUCCESS


def start_now(workflow: Workflow, user: Any) -> tuple[str, int]:
    """Start one run with the input schema's defaults: the message for the user and its level.
    Only for those who may run the workflow; an input the defaults do not satisfy is reported."""
    if not access.allowed(user, "run", workflow.pk):
        return f"{workflow}: you may not run this workflow.", messages.ERROR
    try:
        run = services.start_run(
            workflow, {}, user=user, actor=f"user:{user.get_username()}", source="admin"
        )
    except InputError as exc:
        text = f"{workflow}: its default input is not enough ({exc}); start it from its page."
        return text, messages.ERROR
    except services.InvalidTransition as exc:
        return f"{workflow}: {exc}", messages.ERROR
    url = reverse("admin:run-page", args=[run.pk])
    done = format_html(
        "{}: run <a href='{}'>{}</a> {}.", workflow, url, str(run.pk)[:8], run.status
    )
    return done, messages.SUCCESS


def pause_one(workflow: Workflow, actor: str) -> str:
    services.pause_workflow(workflow, actor=actor)
    return "paused; new runs queue until it is resumed."


def resume_one(workflow: Workflow, actor: str) -> str:
    queued = workflow.runs.filter(status=RunStatus.QUEUED)
    before = queued.count()
    services.resume_workflow(workflow, actor=actor)
    # Resuming admits queued runs while there is room (max_runs): say how many went.
    return f"resumed; {before - queued.count()} queued run(s) started."


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ScopedAdmin):
    list_display = ["__str__", "number", "content_hash", "created_at", "created_by"]
    list_filter = [("workflow", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["workflow__name", "content_hash"]
    list_select_related = ["workflow", "created_by"]
    fields = [
        "workflow",
        "number",
        "content_hash",
        "created_at",
        "created_by",
        "changes",
        "definition_pretty",
        "source",
    ]
    readonly_fields = fields
    actions = ["roll_back"]

    @admin.display(description="changes from the previous version")
    def changes(self, obj: WorkflowVersion) -> str:
        if obj.number == 1:
            return "(the first version)"
        try:
            diff = flow_services.diff_versions(obj.workflow, obj.number - 1, obj.number)
        except flow_services.VersionNotFound:
            return "(the previous version is gone)"
        return format_html("<pre class='furrow-diff'>{}</pre>", diff or "(no change in meaning)")

    @admin.action(
        description="Roll back to the selected version (publish its content as the newest)",
        permissions=["rollback"],
    )
    def roll_back(self, request: HttpRequest, queryset: QuerySet[WorkflowVersion]) -> None:
        if len(queryset) != 1:
            self.message_user(
                request, "Select exactly one version to roll back to.", messages.ERROR
            )
            return
        version = queryset.select_related("workflow").get()
        try:
            published = flow_services.rollback(
                version.workflow,
                version.number,
                user=request.user,
                actor=f"user:{request.user.get_username()}",
            )
        except DefinitionError as exc:
            self.message_user(request, f"{version} no longer validates: {exc}", messages.ERROR)
            return
        if published.created:
            text = f"Published {published.version} with the content of v{version.number}."
            self.message_user(request, text, messages.SUCCESS)
        else:
            text = f"{published.version} already has that content; nothing published."
            self.message_user(request, text, messages.WARNING)

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        # Rolling back publishes a version: the same right as changing the workflow.
        return request.user.has_perm("flows.change_workflow")

    @admin.display(description="definition")
    def definition_pretty(self, obj: WorkflowVersion) -> str:
        return pretty_json(obj.definition)

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class TriggerForm(forms.ModelForm):
    class Meta:
        model = Trigger
        fields = triggers.FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = self.instance
        for field, value in cleaned.items():
            setattr(candidate, field, value)
        for problem in triggers.trigger_problems(candidate):
            field = problem.path.split(".")[0].split("[")[0]
            self.add_error(field if field in self.fields else None, problem.message)
        return cleaned


@admin.register(Trigger)
class TriggerAdmin(ScopedAdmin):
    form = TriggerForm
    list_display = [
        "name",
        "workflow",
        "kind",
        "enabled",
        "when",
        "next_fire_at",
        "last_fired_at",
        "fires",
    ]
    list_filter = ["kind", "enabled", ("workflow", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "workflow__name", "slug", "cron"]
    list_select_related = ["workflow", "after_workflow"]
    readonly_fields = ["next_fire_times", "webhook_url", "last_fired_at", "last_run", "fires"]
    actions = ["enable", "disable"]

    @admin.display(description="fires on")
    def when(self, trigger: Trigger) -> str:
        if trigger.kind == Trigger.Kind.CRON:
            return f"{trigger.cron} ({trigger.timezone})"
        if trigger.kind == Trigger.Kind.WEBHOOK:
            return f"POST /hooks/{trigger.slug}"
        after = trigger.after_workflow.name if trigger.after_workflow else "?"
        return f"{after} {'/'.join(trigger.on_statuses or [])}"

    @admin.display(description="next fire times (UTC)")
    def next_fire_times(self, trigger: Trigger) -> str:
        times = triggers.upcoming(trigger) if trigger.pk else []
        return format_html_join("", "<div>{}</div>", ((t.isoformat(),) for t in times)) or "-"

    @admin.display(description="webhook URL")
    def webhook_url(self, trigger: Trigger) -> str:
        return f"/hooks/{trigger.slug}" if trigger.kind == Trigger.Kind.WEBHOOK else "-"

    def save_model(self, request: HttpRequest, obj: Trigger, form: Any, change: bool) -> None:
        triggers.save_trigger(obj, actor=f"user:{request.user.get_username()}")

    def delete_model(self, request: HttpRequest, obj: Trigger) -> None:
        triggers.delete_trigger(obj, actor=f"user:{request.user.get_username()}")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        for trigger in queryset:
            self.delete_model(request, trigger)

    @admin.action(description="Enable the selected triggers", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Disable the selected triggers", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        self._switch(request, queryset, False)

    def _switch(self, request: HttpRequest, queryset: QuerySet[Trigger], enabled: bool) -> None:
        actor = f"user:{request.user.get_username()}"
        for trigger in queryset.select_related("workflow"):
            try:
                triggers.set_enabled(trigger, enabled, actor=actor)
            except triggers.TriggerError as exc:
                self.message_user(request, f"{trigger}: {exc}", messages.ERROR)
                continue
            state = "enabled" if enabled else "disabled"
            self.message_user(request, f"{trigger}: {state}.", messages.SUCCESS)


# Workflow templates have their own module (registered on import).
from flows import template_admin  # noqa: E402, F401
