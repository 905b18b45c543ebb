"""`GET /api/v1/workers` and `/workers/{name}`: the worker registry, read-only (steps/workers.py).

Workers belong to no workflow, so the workflow access policy does not apply: staff, or holders
of `steps.view_workercluster`, may look.
"""

from __future__ import annotations

import re
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from flows.language.schema import QUEUE_PATTERN
from orchestrator.schema import INVALID, error
from runs.audit_api import StrictOrdering
from steps import workers
from steps.models import WorkerCluster
from steps.worker_rules import WorkerState


class CanViewWorkers(BasePermission):
    message = "only staff, or holders of steps.view_workercluster, may see workers"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and (user.is_staff or user.has_perm("steps.view_workercluster"))
        )


class WorkerSerializer(serializers.ModelSerializer):
    load = serializers.IntegerField(read_only=True, help_text="Steps it is running now.")
    state = serializers.SerializerMethodField(
        help_text="alive: heartbeat within FURROW_WORKER_STALE_AFTER; stale: later than that; "
        "gone: stopped, or silent beyond FURROW_WORKER_GONE_AFTER."
    )

    class Meta:
        model = WorkerCluster
        fields = [
            "name",
            "host",
            "pid",
            "pids",
            "queues",
            "capacity",
            "load",
            "state",
            "started_at",
            "last_heartbeat",
            "stopped_at",
        ]
        extra_kwargs = {"queues": {"help_text": "The queues it serves."}}

    @extend_schema_field(serializers.ChoiceField(choices=[s.value for s in WorkerState]))
    def get_state(self, row: WorkerCluster) -> WorkerState:
        return workers.state(row, self.context["now"])


class QueueField(forms.CharField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and not re.fullmatch(QUEUE_PATTERN, value):
            raise forms.ValidationError("not a queue name")


class QueueFilter(django_filters.CharFilter):
    field_class = QueueField


class WorkerFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=[(s.value, s.value) for s in WorkerState], method="filter_state"
    )
    queue = QueueFilter(method="filter_queue", help_text="workers serving this queue")
    host = django_filters.CharFilter()

    class Meta:
        model = WorkerCluster
        fields: list[str] = []

    def filter_state(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return workers.in_state(queryset, WorkerState(value), timezone.now())

    def filter_queue(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # A JSON list of plain names (validated above): its text holds `"<name>"` exactly when
        # the list does. Portable; SQLite has no JSON containment.
        return queryset.filter(queues__icontains=f'"{value}"')


class _Registry:
    serializer_class = WorkerSerializer
    permission_classes = [CanViewWorkers]

    def get_queryset(self) -> QuerySet[WorkerCluster]:
        return workers.with_load(WorkerCluster.objects.all())

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "now": timezone.now()}  # type: ignore[misc]


@extend_schema_view(get=extend_schema(responses={200: WorkerSerializer(many=True), 400: INVALID}))
class WorkerList(_Registry, generics.ListAPIView):
    """Worker clusters, by name: `?state=alive|stale|gone`, `?queue=`, `?host=`,
    `?ordering=-last_heartbeat`."""

    filter_backends = [DjangoFilterBackend, StrictOrdering]
    filterset_class = WorkerFilter
    ordering_fields = ["name", "started_at", "last_heartbeat", "capacity", "load"]
    ordering = ["name"]


@extend_schema_view(
    get=extend_schema(responses={200: WorkerSerializer, 404: error("No worker of that name.")})
)
class WorkerDetail(_Registry, generics.RetrieveAPIView):
    """One worker cluster, with its load and state."""

    filter_backends: list[Any] = []
    lookup_field = "name"
