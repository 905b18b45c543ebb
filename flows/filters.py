"""Query parameters of the workflow, version and grant lists (flows/api.py, flows/grant_api.py),
as django-filter FilterSets: a value a filter cannot take is a 400 naming the parameter."""

from __future__ import annotations

import django_filters

from flows.models import Workflow, WorkflowGrant, WorkflowVersion
from orchestrator.filters import StrictBooleanFilter, after, before, contains, one_of


class WorkflowFilter(django_filters.FilterSet):
    """`GET /api/v1/workflows`."""

    search = contains("name", "description", help_text="Words in the name or description.")
    paused = StrictBooleanFilter(
        field_name="paused", help_text="`true`: only paused workflows; `false`: only the others."
    )
    created_after = after("created_at")
    created_before = before("created_at")
    updated_after = after("updated_at")
    updated_before = before("updated_at")

    class Meta:
        model = Workflow
        fields: list[str] = []


class VersionFilter(django_filters.FilterSet):
    """`GET /api/v1/workflows/{name}/versions`."""

    created_by = django_filters.CharFilter(
        field_name="created_by__username", help_text="Who published it: a username."
    )
    created_after = after("created_at")
    created_before = before("created_at")

    class Meta:
        model = WorkflowVersion
        fields: list[str] = []


class GrantFilter(django_filters.FilterSet):
    """`GET /api/v1/workflows/{name}/grants`."""

    role = one_of(WorkflowGrant.Role.values)
    user = django_filters.CharFilter(field_name="user__username", help_text="A username.")
    group = django_filters.CharFilter(field_name="group__name", help_text="A group's name.")

    class Meta:
        model = WorkflowGrant
        fields: list[str] = []
