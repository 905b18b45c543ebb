"""Workflow API: publish, list and show workflows and their versions. Thin: publishing is a service."""

from __future__ import annotations

from typing import Any

import yaml
from django.db.models import F
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows import services
from flows.filters import VersionFilter, WorkflowFilter
from flows.language.errors import DefinitionError, Problem
from flows.models import Workflow, WorkflowVersion
from flows.serializers import (
    PublishedSerializer,
    RolledBackSerializer,
    VersionDetailSerializer,
    VersionSerializer,
    WorkflowDetailSerializer,
    WorkflowSerializer,
)
from orchestrator.filters import WORKFLOW_LISTS
from orchestrator.schema import INVALID, error

# What a publishing request carries (definition_from_request); the YAML media types carry the same.
DEFINITION_BODY: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "definition": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": True},
                        {"type": "string", "description": "The definition as YAML or JSON text."},
                    ]
                }
            },
            "required": ["definition"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "additionalProperties": True,
            "description": "The definition itself: `name`, `steps` and the rest.",
        },
    ]
}
DEFINITION_REQUEST = dict.fromkeys(
    ("application/json", "application/yaml", "text/yaml", "application/x-yaml"), DEFINITION_BODY
)
INVALID_DEFINITION = error("Invalid definition: `errors` names each problem and where it is.")
NO_WORKFLOW = error("No workflow of that name.")
PUBLISHED = {
    201: OpenApiResponse(PublishedSerializer, description="Published as a new version."),
    200: OpenApiResponse(
        PublishedSerializer, description="The same content already was the latest version."
    ),
}


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


def actor_of(request: Request) -> str:
    """The actor an API request's events name."""
    return f"user:{request.user.get_username()}"


@extend_schema_view(get=extend_schema(responses={200: WorkflowSerializer(many=True), 400: INVALID}))
class WorkflowList(generics.ListAPIView):
    """GET: workflows, by name (`?search=`, `?paused=`, `?created_after=`, `?created_before=`,
    `?updated_after=`, `?updated_before=`, `?ordering=`). POST: publish a new workflow."""

    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.select_related("latest_version")
    filter_backends = WORKFLOW_LISTS
    filterset_class = WorkflowFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]

    @extend_schema(
        request=DEFINITION_REQUEST,
        responses={
            **PUBLISHED,
            400: INVALID_DEFINITION,
            409: error("A workflow of that name exists: PUT publishes a new version of it."),
        },
    )
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
            services.publish(definition, source=source, user=request.user, actor=actor_of(request))
        )


class WorkflowDetail(APIView):
    @extend_schema(responses={200: WorkflowDetailSerializer, 404: NO_WORKFLOW})
    def get(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow.objects.select_related("latest_version"), name=name)
        return Response(WorkflowDetailSerializer(workflow).data)

    @extend_schema(
        request=DEFINITION_REQUEST,
        responses={**PUBLISHED, 400: INVALID_DEFINITION},
        description="Publish a new version of the workflow, creating it if needed.",
    )
    def put(self, request: Request, name: str) -> Response:
        definition, source = definition_from_request(request)
        definition.setdefault("name", name)
        if definition["name"] != name:
            raise DefinitionError(
                Problem("name", f"'{definition['name']}' does not match the URL's '{name}'")
            )
        return _published(
            services.publish(definition, source=source, user=request.user, actor=actor_of(request))
        )


@extend_schema_view(
    get=extend_schema(responses={200: VersionSerializer(many=True), 400: INVALID, 404: NO_WORKFLOW})
)
class VersionList(generics.ListAPIView):
    """The workflow's versions, newest first (`?created_by=`, `?created_after=`,
    `?created_before=`, `?ordering=version`)."""

    serializer_class = VersionSerializer
    filter_backends = WORKFLOW_LISTS
    filterset_class = VersionFilter
    ordering_fields = ["version", "created_at"]
    ordering = ["-version"]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, without a name
            return WorkflowVersion.objects.none()
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        # `version`, as the API calls the number, so that `?ordering=version` says what it means.
        versions = WorkflowVersion.objects.filter(workflow=workflow).annotate(version=F("number"))
        return versions.select_related("workflow", "created_by")


@extend_schema_view(
    get=extend_schema(
        responses={200: VersionDetailSerializer, 404: error("No such workflow or version.")}
    )
)
class VersionDetail(generics.RetrieveAPIView):
    serializer_class = VersionDetailSerializer

    def get_object(self) -> WorkflowVersion:
        return get_object_or_404(
            WorkflowVersion.objects.select_related("workflow", "created_by"),
            workflow__name=self.kwargs["name"],
            number=self.kwargs["number"],
        )


def _version_number(raw: Any, field: str) -> int:
    """A version number from a query parameter or a body field, or a 400 naming the field."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValidationError({field: "must be a version number (a positive integer)"})
    try:
        number = int(raw)
    except ValueError:
        raise ValidationError({field: f"must be a version number, not {raw!r}"}) from None
    if number < 1:
        raise ValidationError({field: "must be a version number (a positive integer)"})
    return number


def _versions(call: Any) -> Any:
    try:
        return call()
    except services.VersionNotFound as exc:
        raise NotFound(str(exc)) from None


class VersionDiff(APIView):
    """GET ?from=1&to=3: a unified diff of the two versions' canonical YAML.

    `to` defaults to the latest version and `from` to the one before `to`.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("from", int, description="Default: the version before `to`."),
            OpenApiParameter("to", int, description="Default: the latest version."),
        ],
        responses={
            200: inline_serializer(
                "VersionDiff",
                {
                    "workflow": serializers.CharField(),
                    "from": serializers.IntegerField(),
                    "to": serializers.IntegerField(),
                    "diff": serializers.CharField(help_text="A unified diff; empty if none."),
                },
            ),
            400: INVALID,
            404: error("No such workflow or version."),
        },
    )
    def get(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow.objects.select_related("latest_version"), name=name)
        latest = workflow.latest_version.number if workflow.latest_version else 0
        params = request.query_params
        new = _version_number(params["to"], "to") if "to" in params else latest
        old = _version_number(params["from"], "from") if "from" in params else max(new - 1, 1)
        diff = _versions(lambda: services.diff_versions(workflow, old, new))
        return Response({"workflow": name, "from": old, "to": new, "diff": diff})


class WorkflowRollback(APIView):
    """POST {"version": n}: publish version n's content as the newest version (201).

    200 with `created: false` when that content is already the latest version.
    """

    @extend_schema(
        request=inline_serializer("Rollback", {"version": serializers.IntegerField(min_value=1)}),
        responses={
            201: OpenApiResponse(RolledBackSerializer, description="Published as a new version."),
            200: OpenApiResponse(
                RolledBackSerializer, description="That content already is the latest version."
            ),
            400: INVALID,
            404: error("No such workflow or version."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow, name=name)
        body = request.data
        if not isinstance(body, dict) or "version" not in body:
            raise ValidationError({"version": 'required: send {"version": <number>}'})
        extra = sorted(set(body) - {"version"})
        if extra:
            raise ValidationError(dict.fromkeys(extra, "unknown field"))
        number = _version_number(body["version"], "version")
        published = _versions(
            lambda: services.rollback(workflow, number, user=request.user, actor=actor_of(request))
        )
        response = _published(published)
        response.data["content_of"] = number
        return response
