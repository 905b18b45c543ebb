"""`GET /api/v1/step-types`: every step type a definition may use, with its config schema."""

from __future__ import annotations

from django.http import Http404
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from steps.registry import step_types


class StepTypeList(APIView):
    def get(self, request: Request) -> Response:
        return Response(step_types())


class StepTypeDetail(APIView):
    def get(self, request: Request, type_name: str) -> Response:
        for entry in step_types():
            if entry["type"] == type_name:
                return Response(entry)
        raise Http404(f"no step type '{type_name}'")
