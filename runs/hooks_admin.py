"""Admin for outbound event hooks: endpoints are edited here (or come from FURROW_HOOKS, shown
read-only); deliveries and the cursor are for looking, with a "redeliver" action that calls
`runs.hooks.redeliver`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from runs import hooks
from runs.models import HookCursor, HookDelivery, HookEndpoint, HookStatus
from runs.services import InvalidTransition
from steps.executors.http import display_url
from steps.resilience_admin import PrettyJSONField, ReadOnlyAdmin

UNSIGNED = "unsigned: receivers cannot tell these requests from forged ones; name a secret"


@admin.register(HookEndpoint)
class HookEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "shown_url",
        "event_types",
        "workflows",
        "signing",
        "enabled",
        "source",
        "deliveries",
        "updated_at",
    ]
    list_filter = ["enabled", "source"]
    search_fields = ["name", "url"]
    fields = [
        "name",
        "url",
        "event_types",
        "workflows",
        "secret",
        "signing",
        "enabled",
        "timeout",
        "max_attempts",
        "source",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["signing", "source", "created_at", "updated_at"]
    formfield_overrides = {
        models.JSONField: {
            "form_class": PrettyJSONField,
            "widget": forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "vLargeTextField"}),
        }
    }

    def get_queryset(self, request: HttpRequest) -> QuerySet[HookEndpoint]:
        # The deliveries column in the same query, not two queries per row.
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending=Count("deliveries", filter=Q(deliveries__status=HookStatus.PENDING)),
                failed=Count("deliveries", filter=Q(deliveries__status=HookStatus.FAILED)),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.source == "settings":
            return self.fields  # FURROW_HOOKS would overwrite an edit when the tick loop starts
        return self.readonly_fields

    @admin.display(description="url")
    def shown_url(self, obj: HookEndpoint) -> str:
        return display_url(obj.url)

    @admin.display(description="signing")
    def signing(self, obj: HookEndpoint) -> str:
        if obj.secret:
            return f"signed with the secret {obj.secret}"
        return format_html("<strong>&#9888; {}</strong>", UNSIGNED)

    @admin.display(description="deliveries")
    def deliveries(self, obj: HookEndpoint) -> str:
        url = reverse("admin:runs_hookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">{} pending, {} failed</a>',
            url,
            getattr(obj, "pending", 0),
            getattr(obj, "failed", 0),
        )

    def save_model(self, request: HttpRequest, obj: HookEndpoint, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not obj.secret:
            self.message_user(request, f"{obj.name} is {UNSIGNED}.", messages.WARNING)


@admin.register(HookDelivery)
class HookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "endpoint",
        "event_link",
        "status",
        "attempts",
        "last_status_code",
        "attempt_summary",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "endpoint"]
    list_select_related = ["endpoint", "event"]
    search_fields = ["event__type", "endpoint__name"]
    fields = [
        "endpoint",
        "event_link",
        "delivery_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "attempt_table",
        "delivered_at",
        "created_at",
    ]
    readonly_fields = fields
    actions = ["redeliver"]

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        # The change form is off (deliveries are the hook pass's), but acting needs change rights.
        return request.user.has_perm("runs.change_hookdelivery")

    @admin.display(description="event")
    def event_link(self, obj: HookDelivery) -> str:
        url = reverse("admin:runs_event_change", args=[obj.event_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.event_id, obj.event.type)

    @admin.display(description="attempts made")
    def attempt_summary(self, obj: HookDelivery) -> str:
        """Every attempt in the list: `500, 500, timeout, 200`, redeliveries marked."""
        return ", ".join(_short(entry) for entry in obj.attempt_log) or "-"

    @admin.display(description="attempt log")
    def attempt_table(self, obj: HookDelivery) -> str:
        if not obj.attempt_log:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (_row(entry) for entry in obj.attempt_log),
        )
        head = mark_safe("<tr><th>#</th><th>at</th><th>status</th><th>ms</th><th>error</th></tr>")
        return format_html("<table>{}{}</table>", head, rows)

    @admin.action(description="Redeliver the selected failed deliveries", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[HookDelivery]) -> None:
        actor = f"user:{request.user.get_username()}"
        now = timezone.now()
        for delivery in queryset.select_related("endpoint"):
            label = f"delivery {delivery.pk} to {delivery.endpoint.name}"
            try:
                hooks.redeliver(delivery.pk, actor=actor, now=now)
            except InvalidTransition as exc:
                self.message_user(request, f"{label}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{label}: pending again.", messages.SUCCESS)


def _short(entry: dict[str, Any]) -> str:
    if "redelivered_by" in entry:
        return f"redelivered by {entry['redelivered_by']}"
    return str(entry.get("status_code") or "no answer")


def _row(entry: dict[str, Any]) -> tuple[Any, ...]:
    if "redelivered_by" in entry:
        return ("", entry.get("at", ""), "", "", f"redelivered by {entry['redelivered_by']}")
    return (
        entry.get("attempt", ""),
        entry.get("at", ""),
        entry.get("status_code") or "-",
        entry.get("duration_ms", ""),
        entry.get("error", ""),
    )


@admin.register(HookCursor)
class HookCursorAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_event_id", "open_gaps", "updated_at"]

    @admin.display(description="ids not yet visible")
    def open_gaps(self, obj: HookCursor) -> int:
        return len(obj.gaps or [])
