"""API for outbound event hooks, staff only: endpoints (the secret's NAME, never a value),
their deliveries with every attempt, and redelivery through `runs.hooks.redeliver`."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.filters import OTHER_LISTS
from orchestrator.schema import INVALID, error
from runs import hooks
from runs.hook_filters import HookDeliveryFilter, HookFilter
from runs.models import HookDelivery, HookEndpoint, HookStatus
from steps.executors.http import display_url


class StaffOnly(IsAdminUser):
    message = "only staff may see or change event hooks"


NOT_STAFF = error("Only staff may see or change event hooks.")
NO_HOOK = error("No hook of that name.")


class HookEndpointSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    signed = serializers.SerializerMethodField()
    deliveries = serializers.SerializerMethodField()

    class Meta:
        model = HookEndpoint
        # `secret` is the NAME of a Furrow secret; its value is read only to sign.
        fields = [
            "name",
            "url",
            "event_types",
            "workflows",
            "secret",
            "signed",
            "enabled",
            "timeout",
            "max_attempts",
            "source",
            "deliveries",
            "created_at",
            "updated_at",
        ]

    def get_url(self, obj: HookEndpoint) -> str:
        return display_url(obj.url)  # a password in the URL is a credential too

    def get_signed(self, obj: HookEndpoint) -> bool:
        return bool(obj.secret)

    @extend_schema_field(
        inline_serializer(
            "HookDeliveryCounts",
            {status: serializers.IntegerField() for status in HookStatus.values},
        )
    )
    def get_deliveries(self, obj: HookEndpoint) -> dict[str, int]:
        return {status: getattr(obj, f"n_{status}", 0) for status in HookStatus.values}


class HookDeliverySerializer(serializers.ModelSerializer):
    hook = serializers.CharField(source="endpoint.name")
    event = serializers.SerializerMethodField()

    class Meta:
        model = HookDelivery
        fields = [
            "id",
            "delivery_id",
            "hook",
            "event",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "attempt_log",
            "delivered_at",
            "created_at",
        ]

    @extend_schema_field(
        inline_serializer(
            "HookDeliveryEvent",
            {
                "id": serializers.IntegerField(),
                "type": serializers.CharField(),
                "run": serializers.UUIDField(allow_null=True),
                "workflow": serializers.CharField(allow_null=True),
                "created_at": serializers.DateTimeField(),
            },
        )
    )
    def get_event(self, obj: HookDelivery) -> dict[str, Any]:
        event = obj.event
        return {
            "id": event.pk,
            "type": event.type,
            "run": str(event.run_id) if event.run_id else None,
            "workflow": hooks.workflow_name(event),
            "created_at": serializers.DateTimeField().to_representation(event.created_at),
        }


def _endpoints() -> QuerySet[HookEndpoint]:
    counts = {
        f"n_{status}": Count("deliveries", filter=Q(deliveries__status=status))
        for status in HookStatus.values
    }
    return HookEndpoint.objects.annotate(**counts).order_by("name")


@extend_schema_view(
    get=extend_schema(
        responses={200: HookEndpointSerializer(many=True), 400: INVALID, 403: NOT_STAFF}
    )
)
class HookList(generics.ListAPIView):
    """Endpoints, by name: `?enabled=`, `?event=<type>` (those it reaches), `?source=`,
    `?ordering=`."""

    permission_classes = [StaffOnly]
    serializer_class = HookEndpointSerializer
    filter_backends = OTHER_LISTS
    filterset_class = HookFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]

    def get_queryset(self) -> QuerySet[HookEndpoint]:
        return _endpoints()


class HookDetail(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(responses={200: HookEndpointSerializer, 403: NOT_STAFF, 404: NO_HOOK})
    def get(self, request: Request, name: str) -> Response:
        endpoint = _endpoints().filter(name=name).first()
        if endpoint is None:
            raise NotFound(f"unknown hook '{name}'")
        return Response(HookEndpointSerializer(endpoint).data)


@extend_schema_view(
    get=extend_schema(
        responses={
            200: HookDeliverySerializer(many=True),
            400: INVALID,
            403: NOT_STAFF,
            404: NO_HOOK,
        },
    )
)
class HookDeliveryList(generics.ListAPIView):
    """One endpoint's deliveries, newest first: `?status=pending|delivered|failed`, `?event=`,
    `?run=`, `?workflow=`, `?created_after=`, `?created_before=`, `?ordering=`."""

    permission_classes = [StaffOnly]
    serializer_class = HookDeliverySerializer
    filter_backends = OTHER_LISTS
    filterset_class = HookDeliveryFilter
    ordering_fields = ["id", "created_at", "next_attempt_at", "delivered_at", "attempts"]
    ordering = ["-id"]

    def get_queryset(self) -> QuerySet[HookDelivery]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, without a name
            return HookDelivery.objects.none()
        endpoint = _endpoint_or_404(self.kwargs["name"])
        related = ("endpoint", "event__workflow", "event__run__workflow")
        return HookDelivery.objects.filter(endpoint=endpoint).select_related(*related)


class HookRedeliver(APIView):
    """A failed delivery goes back to pending, due now, attempts reset (409 unless failed)."""

    permission_classes = [StaffOnly]

    @extend_schema(
        request=None,
        responses={
            200: HookDeliverySerializer,
            403: NOT_STAFF,
            404: error("No such hook, or no such delivery of it."),
            409: error("The delivery has not failed."),
        },
    )
    def post(self, request: Request, name: str, pk: int) -> Response:
        endpoint = _endpoint_or_404(name)
        get_object_or_404(HookDelivery, pk=pk, endpoint=endpoint)
        actor = f"user:{request.user.get_username()}"
        hooks.redeliver(pk, actor=actor, now=timezone.now())
        related = ("endpoint", "event__workflow", "event__run__workflow")
        delivery = HookDelivery.objects.select_related(*related).get(pk=pk)
        return Response(HookDeliverySerializer(delivery).data)


def _endpoint_or_404(name: str) -> HookEndpoint:
    endpoint = HookEndpoint.objects.filter(name=name).first()
    if endpoint is None:
        raise NotFound(f"unknown hook '{name}'")
    return endpoint
