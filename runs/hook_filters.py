"""Query parameters of the event hook lists (runs/hooks_api.py), as django-filter FilterSets: a
value a filter cannot take is a 400 naming the parameter."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from orchestrator.filters import StrictBooleanFilter, after, before, one_of
from runs.models import HookDelivery, HookEndpoint, HookStatus

EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]+")


class EventTypeField(forms.CharField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and not EVENT_TYPE.fullmatch(value):
            raise forms.ValidationError("not an event type (letters, digits, . _ -)")


class EventTypeFilter(django_filters.CharFilter):
    field_class = EventTypeField


class HookFilter(django_filters.FilterSet):
    """`GET /api/v1/hooks`."""

    enabled = StrictBooleanFilter(field_name="enabled")
    event = EventTypeFilter(
        method="filter_event",
        help_text="An event type, such as `step.failed`: the hooks whose patterns match it.",
    )
    source = one_of(["admin", "settings"], help_text="`settings`: from FURROW_HOOKS.")

    class Meta:
        model = HookEndpoint
        fields: list[str] = []

    def filter_event(
        self, queryset: QuerySet[HookEndpoint], name: str, value: str
    ) -> QuerySet[HookEndpoint]:
        # fnmatch patterns, which SQL cannot match; hooks are few, so their patterns are read.
        patterns = queryset.values_list("pk", "event_types")
        wanted = [pk for pk, types in patterns if any(fnmatchcase(value, p) for p in types)]
        return queryset.filter(pk__in=wanted)


class HookDeliveryFilter(django_filters.FilterSet):
    """`GET /api/v1/hooks/{name}/deliveries`."""

    status = one_of(HookStatus.values)
    event = django_filters.CharFilter(
        method="filter_event", help_text="An event type, or a prefix such as `run.*`."
    )
    run = django_filters.UUIDFilter(
        field_name="event__run_id",
        help_text="A run's id.",
        error_messages={"invalid": "must be a run id"},
    )
    workflow = django_filters.CharFilter(method="filter_workflow", help_text="A workflow's name.")
    created_after = after("created_at")
    created_before = before("created_at")

    class Meta:
        model = HookDelivery
        fields: list[str] = []

    def filter_event(
        self, queryset: QuerySet[HookDelivery], name: str, value: str
    ) -> QuerySet[HookDelivery]:
        if value.endswith(".*"):
            return queryset.filter(event__type__startswith=value[:-1])
        return queryset.filter(event__type=value)

    def filter_workflow(
        self, queryset: QuerySet[HookDelivery], name: str, value: str
    ) -> QuerySet[HookDelivery]:
        return queryset.filter(Q(event__workflow__name=value) | Q(event__run__workflow__name=value))
