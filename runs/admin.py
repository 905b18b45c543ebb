from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from flows.admin import pretty_json
from runs.models import Event, LogLine, Run, StepRun


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


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through services (actions, API, commands), never through a form."""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "workflow",
        "version_number",
        "status",
        "source",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "workflow", "source"]
    search_fields = ["id", "workflow__name"]
    list_select_related = ["workflow", "version"]
    date_hierarchy = "created_at"
    fields = [
        "id",
        "workflow",
        "version",
        "status",
        "source",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "input_pretty",
        "output_pretty",
        "log_tail",
    ]
    readonly_fields = fields
    inlines = [StepRunInline, EventInline]

    @admin.display(description="run", ordering="created_at")
    def short_id(self, obj: Run) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="version")
    def version_number(self, obj: Run) -> int:
        return obj.version.number

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
    list_display = ["name", "run", "type", "status", "attempt", "started_at", "finished_at"]
    list_filter = ["status", "type"]
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
