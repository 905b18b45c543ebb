"""One exception handler: every API error is JSON with a `message`; validation errors list each path."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from flows.grants import GrantError
from flows.language.errors import DefinitionError
from flows.language.inputs import InputError
from flows.triggers import TriggerError
from runs.services import ApprovalDataError, InvalidTransition


def problems_body(exc: DefinitionError, message: str) -> dict[str, Any]:
    return {
        "message": f"{message}: {exc.summary()}",
        "errors": [{"path": p.path, "message": p.message} for p in exc.problems],
    }


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApprovalDataError):
        return Response(problems_body(exc, "invalid approval"), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InputError):
        return Response(problems_body(exc, "invalid run input"), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, GrantError):
        return Response({"message": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, TriggerError):
        return Response(problems_body(exc, "invalid trigger"), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DefinitionError):
        return Response(
            problems_body(exc, "invalid definition"), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, InvalidTransition):
        return Response({"message": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"message": "request body is too large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = {"message": "invalid request", "errors": _flatten(exc.detail)}
    elif isinstance(exc, APIException):
        detail = exc.detail
        response.data = {"message": str(detail) if not isinstance(detail, dict | list) else detail}
    else:  # Django's Http404 and PermissionDenied, which DRF answers with {"detail": ...}
        response.data = {"message": str(response.data.get("detail", ""))}
    return response


def _flatten(detail: Any, path: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            sub = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{path}.{sub}" if path and sub else path or sub)
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [{"path": path, "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            out += _flatten(item, f"{path}[{index}]")
        return out
    return [{"path": path, "message": str(detail)}]
