"""`GET /api/v1/step-types`: every step type a definition may use, with its config schema."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.schema import error
from steps.registry import step_types


class StepTypeSerializer(serializers.Serializer):
    """One entry of steps.registry.step_types(); it describes the body for the schema."""

    type = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(choices=["builtin", "connector"])
    config_schema = serializers.JSONField(help_text="The JSON Schema of the step's `with`.")


class StepTypeList(APIView):
    @extend_schema(operation_id="step_types_list", responses=StepTypeSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(step_types())


class StepTypeDetail(APIView):
    @extend_schema(responses={200: StepTypeSerializer, 404: error("No step type of that name.")})
    def get(self, request: Request, type_name: str) -> Response:
        for entry in step_types():
            if entry["type"] == type_name:
                return Response(entry)
        raise Http404(f"no step type '{type_name}'")
