"""Workflow API: publish, list and show workflows and their versions. Thin: publishing is a service."""

from __future__ import annotations

from typing import Any

import yaml
from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows import services
from flows.language.errors import DefinitionError, Problem
from flows.models import Workflow, WorkflowVersion
from flows.serializers import (
    VersionDetailSerializer,
    VersionSerializer,
    WorkflowDetailSerializer,
    WorkflowSerializer,
)


def definition_from_request(request: Request) -> tuple[Any, str]:
    """The definition a request carries, and its source text.

    Accepts `{"definition": {...}}`, `{"definition": "<yaml or json>"}`, or the definition itself
    as the body (JSON or YAML).
    """
    body = request.data
    if isinstance(body, dict) and "definition" in body:
        extra = sorted(set(body) - {"definition"})
        if extra:
            raise DefinitionError(
                [Problem(key, "unknown field (send only 'definition')") for key in extra]
            )
        definition = body["definition"]
        if isinstance(definition, str):
            return services.parse_definition(definition), definition
    else:
        definition = body
    if not isinstance(definition, dict):
        raise DefinitionError("the definition must be an object (a mapping with name and steps)")
    source = getattr(request, "raw_yaml", None) or _as_yaml(definition)
    return definition, source


def _as_yaml(definition: Any) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True)


def _published(published: services.Published) -> Response:
    version = published.version
    body = {
        "name": version.workflow.name,
        "version": version.number,
        "content_hash": version.content_hash,
        "created": published.created,
        "created_at": version.created_at,
    }
    return Response(
        body, status=status.HTTP_201_CREATED if published.created else status.HTTP_200_OK
    )


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


class WorkflowList(generics.ListAPIView):
    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.select_related("latest_version")

    def post(self, request: Request) -> Response:
        definition, source = definition_from_request(request)
        name = definition.get("name")
        if isinstance(name, str) and Workflow.objects.filter(name=name).exists():
            return Response(
                {
                    "message": f"workflow '{name}' already exists; PUT /api/v1/workflows/{name} publishes a new version"
                },
                status=status.HTTP_409_CONFLICT,
            )
        return _published(
            services.publish(definition, source=source, user=request.user, actor=_actor(request))
        )


class WorkflowDetail(APIView):
    def get(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow.objects.select_related("latest_version"), name=name)
        return Response(WorkflowDetailSerializer(workflow).data)

    def put(self, request: Request, name: str) -> Response:
        definition, source = definition_from_request(request)
        definition.setdefault("name", name)
        if definition["name"] != name:
            raise DefinitionError(
                Problem("name", f"'{definition['name']}' does not match the URL's '{name}'")
            )
        return _published(
            services.publish(definition, source=source, user=request.user, actor=_actor(request))
        )


class VersionList(generics.ListAPIView):
    serializer_class = VersionSerializer

    def get_queryset(self) -> Any:
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return WorkflowVersion.objects.filter(workflow=workflow).select_related(
            "workflow", "created_by"
        )


class VersionDetail(generics.RetrieveAPIView):
    serializer_class = VersionDetailSerializer

    def get_object(self) -> WorkflowVersion:
        return get_object_or_404(
            WorkflowVersion.objects.select_related("workflow", "created_by"),
            workflow__name=self.kwargs["name"],
            number=self.kwargs["number"],
        )
