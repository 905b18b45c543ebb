"""Kinds of query parameter that several API lists share, as django-filter filters: each refuses
a value it cannot take (a 400 naming the parameter) rather than ignoring it, and the OpenAPI
schema describes it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend

from flows.api_access import VisibleWorkflowsFilter
from runs.audit_api import StrictOrdering, UtcIsoDateTimeFilter

WORKFLOW_LISTS = [VisibleWorkflowsFilter, DjangoFilterBackend, StrictOrdering]
"""Filter backends of a list of workflows' rows: what the user may view, `?...=`, `?ordering=`."""
OTHER_LISTS = [DjangoFilterBackend, StrictOrdering]
"""Filter backends of a list of rows that belong to no workflow (staff's, or everyone's)."""

TRUE = ("true", "1")
FALSE = ("false", "0")


def one_of(values: Iterable[str], **kwargs: Any) -> django_filters.ChoiceFilter:
    """One of `values`, or a 400 listing them."""
    values = list(values)
    return django_filters.ChoiceFilter(
        choices=[(value, value) for value in values],
        error_messages={"invalid_choice": f"must be one of {', '.join(values)}"},
        **kwargs,
    )


class StrictBooleanFilter(django_filters.ChoiceFilter):
    """`true`/`1` or `false`/`0`; anything else is a 400 (django-filter's BooleanFilter ignores
    a value it cannot read, so `?paused=yes` would list everything)."""

    def __init__(self, **kwargs: Any) -> None:
        values = [*TRUE, *FALSE]
        super().__init__(
            choices=[(value, value) for value in values],
            error_messages={"invalid_choice": f"must be one of {', '.join(values)}"},
            **kwargs,
        )

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in django_filters.constants.EMPTY_VALUES:
            return qs
        return qs.filter(**{self.field_name: value in TRUE})


def after(field: str) -> UtcIsoDateTimeFilter:
    return UtcIsoDateTimeFilter(
        field_name=field,
        lookup_expr="gte",
        help_text=f"`{field}` at or after this ISO 8601 time.",
    )


def before(field: str) -> UtcIsoDateTimeFilter:
    return UtcIsoDateTimeFilter(
        field_name=field, lookup_expr="lt", help_text=f"`{field}` before this ISO 8601 time."
    )


def contains(*fields: str, help_text: str) -> django_filters.CharFilter:
    """Rows where any of `fields` contains the value, ignoring case."""

    def matching(queryset: QuerySet, name: str, value: str) -> QuerySet:
        anywhere = Q()
        for field in fields:
            anywhere |= Q(**{f"{field}__icontains": value})
        return queryset.filter(anywhere)

    return django_filters.CharFilter(method=matching, help_text=help_text)
