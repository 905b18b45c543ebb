"""The audit trail: what people did (through the API, the admin or a command), newest first.

Every action by a person is already an Event with its actor (`user:<name>`, or `cli` for a
command run without --as); this is the view of those, across workflows or for one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from flows.api_access import VisibleWorkflowsFilter
from flows.models import Workflow
from orchestrator.schema import INVALID, error
from runs.models import Event

PEOPLE = Q(actor__startswith="user:") | Q(actor="cli")


class AuditEventSerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)
    step = serializers.CharField(
        source="step_run.name", default=None, read_only=True, allow_null=True
    )
    workflow = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = ["id", "type", "actor", "workflow", "run", "step", "data", "created_at"]

    def get_workflow(self, event: Event) -> str | None:
        workflow = event.workflow or (event.run.workflow if event.run else None)
        return workflow.name if workflow else None


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time, in UTC: PostgreSQL refuses an offset beyond ±15:59, which ISO 8601 and
    Python allow (`?since=2020-01-01T00:00:00+20:06` was a 500)."""

    def to_python(self, value: Any) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise forms.ValidationError("out of range once converted to UTC") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class AuditFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(help_text="`user:<name>` or `cli`")
    type = django_filters.CharFilter(
        method="filter_type", help_text="an event type, or a prefix such as `run.*`"
    )
    run = django_filters.UUIDFilter(field_name="run_id")
    workflow = django_filters.CharFilter(method="filter_workflow", help_text="a workflow's name")
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields: list[str] = []

    def filter_type(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        if value.endswith(".*"):
            return queryset.filter(type__startswith=value[:-1])
        return queryset.filter(type=value)

    def filter_workflow(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        return queryset.filter(Q(workflow__name=value) | Q(run__workflow__name=value))


class StrictOrdering(OrderingFilter):
    """?ordering= with a field it cannot order by is a 400, not silently the default order."""

    def get_ordering(self, request: Any, queryset: QuerySet, view: Any) -> Any:
        raw = request.query_params.get(self.ordering_param)
        if raw:
            allowed = {
                name for name, _ in self.get_valid_fields(queryset, view, {"request": request})
            }
            unknown = [f for f in raw.split(",") if f.strip().lstrip("-") not in allowed]
            if unknown:
                raise ValidationError(
                    {
                        self.ordering_param: f"cannot order by {', '.join(unknown)}; use {', '.join(sorted(allowed))}"
                    }
                )
        return super().get_ordering(request, queryset, view)


@extend_schema_view(
    get=extend_schema(responses={200: AuditEventSerializer(many=True), 400: INVALID})
)
class AuditList(generics.ListAPIView):
    """Actions by people, newest first: `?actor=`, `?type=`, `?workflow=`, `?run=`, `?since=`,
    `?until=`, `?ordering=created_at`."""

    serializer_class = AuditEventSerializer
    filter_backends = [VisibleWorkflowsFilter, DjangoFilterBackend, StrictOrdering]
    filterset_class = AuditFilter
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]

    def get_queryset(self) -> QuerySet[Event]:
        return Event.objects.filter(PEOPLE).select_related("workflow", "run__workflow", "step_run")


@extend_schema_view(
    get=extend_schema(
        responses={
            200: AuditEventSerializer(many=True),
            400: INVALID,
            404: error("No workflow of that name."),
        }
    )
)
class WorkflowAudit(AuditList):
    """Actions by people on one workflow and its runs."""

    def get_queryset(self) -> QuerySet[Event]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, without a name
            return Event.objects.none()
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return super().get_queryset().filter(Q(workflow=workflow) | Q(run__workflow=workflow))
