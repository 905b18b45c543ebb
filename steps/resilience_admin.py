"""Admin for connectors (editable), circuit breakers, rate limits and target health (read-only,
with actions that call `steps.guards` and `steps.health`)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Concat
from django.forms.fields import InvalidJSONInput
from django.utils import timezone

from steps import guards, health
from steps.models import CircuitBreaker, Connector, HealthStatus, RateLimit, TargetHealth
from steps.resilience_rules import connector_target_key


class PrettyJSONField(forms.JSONField):
    """A JSON text area that shows its value indented, one key a line."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value  # what the user typed, so a typo can be fixed, not retyped
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the guards and the health checks; people look, and act through actions."""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["name", "base_url", "enabled", "health", "rate_limit", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "description", "base_url"]
    readonly_fields = ["created_at", "updated_at"]
    formfield_overrides = {
        models.JSONField: {
            "form_class": PrettyJSONField,
            "widget": forms.Textarea(attrs={"rows": 10, "cols": 90, "class": "vLargeTextField"}),
        }
    }
    actions = ["check_health_now"]

    def get_queryset(self, request: Any) -> QuerySet[Connector]:
        # The health column in the same query, not one query per row.
        key = Concat(Value("connector:"), OuterRef("name"), output_field=models.CharField())
        status = TargetHealth.objects.filter(key=key).values("status")[:1]
        return super().get_queryset(request).annotate(health_status=Subquery(status))

    @admin.display(description="health")
    def health(self, obj: Connector) -> str:
        return getattr(obj, "health_status", None) or "-"

    @admin.action(description="Check health now")
    def check_health_now(self, request: Any, queryset: QuerySet[Connector]) -> None:
        now = timezone.now()
        keys = []
        for connector in queryset:
            if connector.health_url:
                key = connector_target_key(connector.name)
                health.register_target(key, connector.health_url, now)
                keys.append(key)
        if not keys:
            self.message_user(
                request, "None of these connectors has a health URL.", messages.WARNING
            )
            return
        _report(self, request, health.check_now(keys, now))


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    list_display = ["key", "state", "failures", "successes", "opened_at", "last_failure_at"]
    list_filter = ["state"]
    search_fields = ["key"]
    actions = ["reset"]

    @admin.action(description="Reset (close) the selected circuit breakers")
    def reset(self, request: Any, queryset: QuerySet[CircuitBreaker]) -> None:
        actor = f"user:{request.user.get_username()}"
        keys = list(queryset.values_list("key", flat=True))
        for key in keys:
            guards.reset_breaker(key, actor=actor)
        self.message_user(request, f"Closed {len(keys)} circuit breaker(s).", messages.SUCCESS)


@admin.register(RateLimit)
class RateLimitAdmin(ReadOnlyAdmin):
    list_display = ["key", "rate", "burst", "tokens", "updated_at"]
    search_fields = ["key"]


@admin.register(TargetHealth)
class TargetHealthAdmin(ReadOnlyAdmin):
    list_display = ["key", "status", "error", "checked_at", "last_success_at", "next_check_at"]
    list_filter = ["status"]
    search_fields = ["key", "url"]
    actions = ["check_now"]

    @admin.action(description="Check the selected targets now")
    def check_now(self, request: Any, queryset: QuerySet[TargetHealth]) -> None:
        keys = list(queryset.values_list("key", flat=True))
        _report(self, request, health.check_now(keys, timezone.now()))


def _report(model_admin: admin.ModelAdmin, request: Any, rows: list[TargetHealth]) -> None:
    for row in rows:
        level = messages.SUCCESS if row.status == HealthStatus.HEALTHY else messages.WARNING
        detail = f": {row.error}" if row.error else ""
        model_admin.message_user(request, f"{row.key} is {row.status}{detail}", level)
