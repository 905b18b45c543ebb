from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from flows.models import Workflow, WorkflowVersion


def pretty_json(value: Any) -> str:
    return format_html(
        "<pre class='furrow-json'>{}</pre>",
        json.dumps(value, indent=2, sort_keys=False, default=str),
    )


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
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "latest_version", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["name", "latest_version", "created_at", "updated_at"]
    fields = ["name", "description", "latest_version", "created_at", "updated_at"]
    list_select_related = ["latest_version__workflow"]
    inlines = [VersionInline]

    def has_add_permission(self, request: Any) -> bool:
        return False  # workflows are published (API, import_workflows), not typed into a form


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "number", "content_hash", "created_at", "created_by"]
    list_filter = ["workflow"]
    list_select_related = ["workflow", "created_by"]
    fields = [
        "workflow",
        "number",
        "content_hash",
        "created_at",
        "created_by",
        "definition_pretty",
        "source",
    ]
    readonly_fields = fields

    @admin.display(description="definition")
    def definition_pretty(self, obj: WorkflowVersion) -> str:
        return pretty_json(obj.definition)

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
