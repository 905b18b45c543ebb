"""API for connectors, circuit breakers and target health. Read-only, except a staff-only
breaker reset, which goes through `steps.guards.reset_breaker`.

A connector shows its auth scheme and the *name* of its secret, never a value, and no header
values (a careless definition might carry a key there).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.filters import OTHER_LISTS
from orchestrator.pagination import LimitOffsetPagination
from orchestrator.schema import INVALID, error
from steps import guards
from steps.connectors import all_connectors, get_connector
from steps.executors.connector import ConnectorSpec
from steps.executors.http import display_url
from steps.filters import CircuitBreakerFilter, TargetHealthFilter
from steps.models import CircuitBreaker, TargetHealth
from steps.resilience_rules import OnOpen, connector_target_key


class TargetHealthSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = TargetHealth
        fields = [
            "key",
            "url",
            "status",
            "error",
            "checked_at",
            "last_success_at",
            "next_check_at",
        ]

    def get_url(self, obj: TargetHealth) -> str:
        return display_url(obj.url)


class CircuitBreakerSerializer(serializers.ModelSerializer):
    class Meta:
        model = CircuitBreaker
        fields = [
            "key",
            "state",
            "failures",
            "successes",
            "opened_at",
            "last_failure",
            "last_failure_at",
            "updated_at",
        ]


class ConnectorOperationSerializer(serializers.Serializer):
    type = serializers.CharField(
        help_text="The step type that calls it: `<connector>.<operation>`."
    )
    method = serializers.CharField()
    path = serializers.CharField()
    description = serializers.CharField(allow_blank=True)


class ConnectorAuthSerializer(serializers.Serializer):
    scheme = serializers.ChoiceField(choices=["bearer", "basic", "header"])
    secret = serializers.CharField(help_text="The name of a Furrow secret, never its value.")
    header = serializers.CharField(required=False, help_text="Only for the header scheme.")
    username = serializers.CharField(required=False, help_text="Only for the basic scheme.")


class BreakerPolicySerializer(serializers.Serializer):
    failure_threshold = serializers.IntegerField()
    success_threshold = serializers.IntegerField()
    open_timeout = serializers.FloatField(help_text="Seconds.")
    on_open = serializers.ChoiceField(choices=[value.value for value in OnOpen])


class ConnectorSerializer(serializers.Serializer):
    """What connector_json() answers; it describes the body for the schema."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    source = serializers.ChoiceField(choices=["preset", "settings", "database"])
    enabled = serializers.BooleanField()
    base_url = serializers.CharField()
    operations = serializers.DictField(child=ConnectorOperationSerializer())
    auth = ConnectorAuthSerializer(allow_null=True)
    timeout = serializers.FloatField(help_text="Seconds.")
    rate_limit = serializers.FloatField(allow_null=True, help_text="Requests per second.")
    circuit_breaker = BreakerPolicySerializer(allow_null=True)
    health_url = serializers.CharField(allow_blank=True)
    health = TargetHealthSerializer(allow_null=True)


def connector_json(spec: ConnectorSpec, health: TargetHealth | None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "enabled": spec.enabled,
        "base_url": display_url(spec.base_url),
        "operations": {
            op.name: {
                "type": f"{spec.name}.{op.name}",
                "method": op.method,
                "path": op.path,
                "description": op.description,
            }
            for op in spec.operations.values()
        },
        "auth": spec.auth.public() if spec.auth else None,
        "timeout": spec.timeout,
        "rate_limit": spec.rate_limit,
        "circuit_breaker": asdict(spec.circuit_breaker) if spec.circuit_breaker else None,
        "health_url": display_url(spec.health_url) if spec.health_url else "",
        "health": TargetHealthSerializer(health).data if health else None,
    }


def _health_by_key(keys: list[str]) -> dict[str, TargetHealth]:
    return {row.key: row for row in TargetHealth.objects.filter(key__in=keys)}


class ConnectorList(APIView):
    """Presets, FURROW_CONNECTORS and admin rows, merged (steps.connectors), by name."""

    pagination_class = LimitOffsetPagination  # what get() pages with; the schema reads it here

    @extend_schema(operation_id="connectors_list", responses=ConnectorSerializer(many=True))
    def get(self, request: Request) -> Response:
        specs = sorted(all_connectors().values(), key=lambda spec: spec.name)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(specs, request, view=self) or []
        health = _health_by_key([connector_target_key(spec.name) for spec in page])
        items = [connector_json(spec, health.get(connector_target_key(spec.name))) for spec in page]
        return paginator.get_paginated_response(items)


class ConnectorDetail(APIView):
    @extend_schema(responses={200: ConnectorSerializer, 404: error("No connector of that name.")})
    def get(self, request: Request, name: str) -> Response:
        spec = get_connector(name)
        if spec is None:
            raise NotFound(f"unknown connector '{name}'")
        key = connector_target_key(name)
        return Response(connector_json(spec, TargetHealth.objects.filter(key=key).first()))


@extend_schema_view(
    get=extend_schema(responses={200: CircuitBreakerSerializer(many=True), 400: INVALID})
)
class CircuitBreakerList(generics.ListAPIView):
    """Breakers, by key: `?state=closed|open|half_open`, `?target=`, `?ordering=`."""

    serializer_class = CircuitBreakerSerializer
    queryset = CircuitBreaker.objects.all()
    filter_backends = OTHER_LISTS
    filterset_class = CircuitBreakerFilter
    ordering_fields = ["key", "state", "failures", "opened_at", "last_failure_at", "updated_at"]
    ordering = ["key"]


class StaffOnly(IsAdminUser):
    message = "only staff may reset a circuit breaker"


class CircuitBreakerReset(APIView):
    """Close the breaker now, whatever its counts (the target is known to be back)."""

    permission_classes = [StaffOnly]

    @extend_schema(
        request=None,
        responses={
            200: CircuitBreakerSerializer,
            403: error("Only staff may reset a circuit breaker."),
            404: error("No circuit breaker with this key."),
        },
    )
    def post(self, request: Request, key: str) -> Response:
        try:
            breaker = guards.reset_breaker(key, actor=f"user:{request.user.get_username()}")
        except CircuitBreaker.DoesNotExist:
            raise NotFound(f"unknown circuit breaker '{key}'") from None
        return Response(CircuitBreakerSerializer(breaker).data)


@extend_schema_view(
    get=extend_schema(responses={200: TargetHealthSerializer(many=True), 400: INVALID})
)
class HealthList(generics.ListAPIView):
    """Targets' last health checks, by key: `?status=healthy|unhealthy|unknown`, `?target=`,
    `?ordering=`."""

    serializer_class = TargetHealthSerializer
    queryset = TargetHealth.objects.all()
    filter_backends = OTHER_LISTS
    filterset_class = TargetHealthFilter
    ordering_fields = ["key", "status", "checked_at", "last_success_at", "next_check_at"]
    ordering = ["key"]


class HealthDetail(APIView):
    @extend_schema(
        responses={200: TargetHealthSerializer, 404: error("No health checks of this target yet.")}
    )
    def get(self, request: Request, key: str) -> Response:
        target = TargetHealth.objects.filter(key=key).first()
        if target is None:
            raise NotFound(
                f"no health checks for target '{key}' (targets are connectors with a health_url "
                "and http steps with health_check, once they have run)"
            )
        return Response(TargetHealthSerializer(target).data)
