"""Triggers in the API: list, create, show, change, delete, enable, disable. Thin: flows/triggers.py
validates and writes."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows import triggers
from flows.api import actor_of
from flows.api_access import VisibleWorkflowsFilter
from flows.models import Trigger, Workflow

FIELDS = triggers.FIELDS


class TriggerSerializer(serializers.ModelSerializer):
    workflow = serializers.SlugRelatedField(slug_field="name", queryset=Workflow.objects.all())
    after_workflow = serializers.SlugRelatedField(
        slug_field="name", queryset=Workflow.objects.all(), required=False, allow_null=True
    )
    input = serializers.JSONField(required=False)
    on_statuses = serializers.JSONField(required=False)
    next_fire_times = serializers.SerializerMethodField()
    webhook_url = serializers.SerializerMethodField()
    last_run = serializers.UUIDField(source="last_run_id", read_only=True)

    class Meta:
        model = Trigger
        fields = [
            "id",
            *FIELDS,
            "next_fire_times",
            "webhook_url",
            "last_fired_at",
            "last_run",
            "fires",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_fired_at", "fires", "created_at", "updated_at"]
        # Uniqueness is the service's to report, with the other problems at once.
        validators: list[Any] = []

    def get_next_fire_times(self, trigger: Trigger) -> list[str]:
        return [moment.isoformat() for moment in triggers.upcoming(trigger)]

    def get_webhook_url(self, trigger: Trigger) -> str | None:
        return f"/hooks/{trigger.slug}" if trigger.kind == Trigger.Kind.WEBHOOK else None

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(FIELDS) - {"id"})
            if unknown:
                raise serializers.ValidationError(dict.fromkeys(unknown, "unknown field"))
        return super().to_internal_value(data)

    def create(self, validated: dict[str, Any]) -> Trigger:
        return triggers.save_trigger(Trigger(**validated), actor=self.context["actor"])

    def update(self, trigger: Trigger, validated: dict[str, Any]) -> Trigger:
        for field, value in validated.items():
            setattr(trigger, field, value)
        return triggers.save_trigger(trigger, actor=self.context["actor"])


class TriggerFilter(django_filters.FilterSet):
    workflow = django_filters.CharFilter(field_name="workflow__name")
    kind = django_filters.ChoiceFilter(choices=Trigger.Kind.choices)
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Trigger
        fields: list[str] = []


class TriggerList(generics.ListCreateAPIView):
    serializer_class = TriggerSerializer
    filter_backends = [VisibleWorkflowsFilter, DjangoFilterBackend]
    filterset_class = TriggerFilter
    queryset = Trigger.objects.select_related("workflow", "after_workflow")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "actor": actor_of(self.request)}


class WorkflowTriggers(TriggerList):
    def get_queryset(self) -> QuerySet[Trigger]:
        if getattr(self, "swagger_fake_view", False):
            return Trigger.objects.none()
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return super().get_queryset().filter(workflow=workflow)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.data, dict):
            request.data.setdefault("workflow", self.kwargs["name"])  # type: ignore[union-attr]
        return super().create(request, *args, **kwargs)


class TriggerDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = TriggerSerializer
    queryset = Trigger.objects.select_related("workflow", "after_workflow")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "actor": actor_of(self.request)}

    def perform_destroy(self, trigger: Trigger) -> None:
        triggers.delete_trigger(trigger, actor=actor_of(self.request))


class TriggerSwitch(APIView):
    """POST: enable (or disable) a trigger; a cron trigger's next fire is computed from now."""

    enabled = True

    def post(self, request: Request, pk: int) -> Response:
        trigger = get_object_or_404(Trigger.objects.select_related("workflow"), pk=pk)
        triggers.set_enabled(trigger, self.enabled, actor=actor_of(request))
        return Response(TriggerSerializer(trigger).data, status=status.HTTP_200_OK)
