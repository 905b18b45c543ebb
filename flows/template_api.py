"""Workflow templates in the API: list, show, create, change, delete, import the orchestrator
seed's pack, and instantiate one into a workflow. Thin: flows/workflow_templates.py validates
and writes.

Any signed-in user may read templates. Writing them takes the model permissions
(flows.add/change/delete_workflowtemplate); built-ins are read-only for everyone (409).
Instantiating takes what publishing would: flows.add_workflow for a new workflow, edit on an
existing one (flows/access.py).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows import workflow_templates as service
from flows.api import actor_of
from flows.language.errors import DefinitionError
from flows.language.placeholders import apply_defaults
from flows.models import WorkflowTemplate
from orchestrator.errors import problems_body
from orchestrator.schema import INVALID, error

NO_TEMPLATE = error("No template of that name.")
INVALID_TEMPLATE = error("Invalid template: `errors` names each problem and where it is.")
READ_ONLY = error("Built-in templates are read-only: copy one as a user template to change it.")
WRITABLE = ["name", "title", "description", "category", "tags", "parameters", "definition"]


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"


def invalid(exc: DefinitionError, what: str) -> Response:
    return Response(problems_body(exc, what), status=status.HTTP_400_BAD_REQUEST)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "YAML with (( name )) placeholders"},
            {"type": "object", "additionalProperties": True},
        ],
        "description": "The definition body: YAML text (answers always give text), or an object.",
    }
)
class DefinitionField(serializers.Field):
    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        if isinstance(data, dict):
            return service.as_yaml(data)
        raise serializers.ValidationError("YAML text or an object")

    def to_representation(self, value: str) -> str:
        return value


class TemplateSerializer(serializers.ModelSerializer):
    name = serializers.CharField(max_length=100, help_text="Lowercase letters, digits, - and _.")
    definition = DefinitionField(source="body")
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    parameters = serializers.JSONField(
        required=False, help_text="JSON Schema of an object; each property is a parameter."
    )
    defaults = serializers.SerializerMethodField(
        help_text="The parameters' defaults, as instantiating fills them in."
    )
    created_by = serializers.CharField(
        source="created_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = WorkflowTemplate
        fields = [*WRITABLE, "defaults", "source", "created_by", "created_at", "updated_at"]
        read_only_fields = ["source", "created_by", "created_at", "updated_at"]
        # Names and every other rule are the service's to report, all problems at once.
        validators: list[Any] = []

    def get_defaults(self, template: WorkflowTemplate) -> dict[str, Any]:
        defaults = apply_defaults(template.parameters, {})
        return defaults if isinstance(defaults, dict) else {}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(WRITABLE))
            if unknown:
                raise serializers.ValidationError(dict.fromkeys(unknown, "unknown field"))
        return super().to_internal_value(data)


class TemplatePermission(BasePermission):
    """Signed in to read and instantiate; the model permission to write (the view then refuses
    built-ins). Instantiating checks the workflow in the service."""

    message = "you may not change templates"
    NEEDS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        default = self.NEEDS.get(request.method or "GET")
        needs = getattr(view, "needs", [default] if default else [])
        return all(user.has_perm(f"flows.{action}_workflowtemplate") for action in needs)


class TemplateFilter(django_filters.FilterSet):
    source = django_filters.ChoiceFilter(choices=WorkflowTemplate.Source.choices)
    category = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="templates with this tag")
    search = django_filters.CharFilter(
        method="filter_search", help_text="words in the name, title or description"
    )

    class Meta:
        model = WorkflowTemplate
        fields: list[str] = []

    def filter_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # Tags are lowercase words (the service checks): `"word"` in the list's JSON text is
        # the tag itself, on SQLite and PostgreSQL alike (JSON `contains` is not on SQLite).
        return queryset.filter(tags__icontains=f'"{value.strip().lower()}"')

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        for word in value.split():
            queryset = queryset.filter(
                Q(name__icontains=word) | Q(title__icontains=word) | Q(description__icontains=word)
            )
        return queryset


def _written(call: Any) -> Any:
    try:
        return call()
    except service.TemplateReadOnly as exc:
        raise Conflict(str(exc)) from None
    except service.TemplateNameTaken as exc:
        raise Conflict(str(exc)) from None


def _save(template: WorkflowTemplate, request: Request) -> Any:
    try:
        return _written(
            lambda: service.save_template(template, actor=actor_of(request), user=request.user)
        )
    except DefinitionError as exc:
        return invalid(exc, "invalid template")


@extend_schema_view(
    get=extend_schema(
        description="Templates, by name: `?source=builtin|user|imported`, `?tag=`, "
        "`?category=`, `?search=`.",
        responses={200: TemplateSerializer(many=True), 400: INVALID},
    ),
    post=extend_schema(
        description="Create a user template (needs flows.add_workflowtemplate).",
        request=TemplateSerializer,
        responses={
            201: TemplateSerializer,
            400: INVALID_TEMPLATE,
            403: error("You may not add templates."),
            409: error("A template of that name exists."),
        },
    ),
)
class TemplateList(generics.ListAPIView):
    serializer_class = TemplateSerializer
    permission_classes = [TemplatePermission]
    filter_backends = [DjangoFilterBackend]
    filterset_class = TemplateFilter
    queryset = WorkflowTemplate.objects.select_related("created_by")

    def post(self, request: Request) -> Response:
        serializer = TemplateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        template = WorkflowTemplate(**serializer.validated_data, source="user")
        saved = _save(template, request)
        if isinstance(saved, Response):
            return saved
        return Response(TemplateSerializer(saved).data, status=status.HTTP_201_CREATED)


class TemplateDetail(APIView):
    permission_classes = [TemplatePermission]

    @extend_schema(responses={200: TemplateSerializer, 404: NO_TEMPLATE})
    def get(self, request: Request, name: str) -> Response:
        template = get_object_or_404(
            WorkflowTemplate.objects.select_related("created_by"), name=name
        )
        return Response(TemplateSerializer(template).data)

    @extend_schema(
        description="Replace a user or imported template (needs flows.change_workflowtemplate). "
        "`name` may be left out; given, it renames the template.",
        request=TemplateSerializer,
        responses={
            200: TemplateSerializer,
            400: INVALID_TEMPLATE,
            403: error("You may not change templates."),
            404: NO_TEMPLATE,
            409: error("A built-in template, or another template has the new name."),
        },
    )
    def put(self, request: Request, name: str) -> Response:
        template = get_object_or_404(WorkflowTemplate, name=name)
        if template.is_builtin:
            raise Conflict(f"template '{name}' is built in and read-only; copy it to change it")
        data = request.data
        if isinstance(data, dict) and "name" not in data:
            data = {**data, "name": name}
        serializer = TemplateSerializer(template, data=data)
        serializer.is_valid(raise_exception=True)
        for field, value in serializer.validated_data.items():
            setattr(template, field, value)
        saved = _save(template, request)
        return saved if isinstance(saved, Response) else Response(TemplateSerializer(saved).data)

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted; workflows made from it are kept."),
            403: error("You may not delete templates."),
            404: NO_TEMPLATE,
            409: READ_ONLY,
        }
    )
    def delete(self, request: Request, name: str) -> Response:
        template = get_object_or_404(WorkflowTemplate, name=name)
        _written(lambda: service.delete_template(template, actor=actor_of(request)))
        return Response(status=status.HTTP_204_NO_CONTENT)


INSTANTIATED = inline_serializer(
    "Instantiated",
    {
        "template": serializers.CharField(),
        "workflow": serializers.CharField(),
        "version": serializers.IntegerField(),
        "content_hash": serializers.CharField(),
        "created": serializers.BooleanField(help_text="False: that content already was latest."),
        "workflow_created": serializers.BooleanField(help_text="True: a new workflow."),
    },
)


class InstantiateSerializer(serializers.Serializer):
    workflow = serializers.CharField(max_length=100, help_text="The workflow to publish.")
    parameters = serializers.DictField(
        child=serializers.JSONField(), required=False, default=dict,
        help_text="Values for the template's parameters; defaults fill in the rest.",
    )  # fmt: skip

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"workflow", "parameters"})
            if unknown:
                raise serializers.ValidationError(dict.fromkeys(unknown, "unknown field"))
        return super().to_internal_value(data)


class TemplateInstantiate(APIView):
    """POST {"workflow": "...", "parameters": {...}}: publish the definition the template gives
    as a new workflow (201), or as a new version of one you may edit."""

    permission_classes = [TemplatePermission]
    needs: list[str] = []  # any signed-in user; the service checks the workflow

    @extend_schema(
        request=InstantiateSerializer,
        responses={
            201: OpenApiResponse(INSTANTIATED, description="Published as a new version."),
            200: OpenApiResponse(
                INSTANTIATED, description="The workflow's latest version already has that content."
            ),
            400: error("Invalid parameters or definition: `errors` names each problem's path."),
            403: error("You may not create that workflow, or publish a new version of it."),
            404: NO_TEMPLATE,
        },
    )
    def post(self, request: Request, name: str) -> Response:
        template = get_object_or_404(WorkflowTemplate, name=name)
        serializer = InstantiateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow, parameters = (
            serializer.validated_data["workflow"],
            serializer.validated_data["parameters"],
        )
        try:
            done = service.instantiate(
                template, workflow, parameters, actor=actor_of(request), user=request.user
            )
        except service.InstantiateDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except DefinitionError as exc:
            return invalid(exc, "invalid parameters or definition")
        version = done.published.version
        body = {
            "template": template.name,
            "workflow": version.workflow.name,
            "version": version.number,
            "content_hash": version.content_hash,
            "created": done.published.created,
            "workflow_created": done.workflow_created,
        }
        code = status.HTTP_201_CREATED if done.published.created else status.HTTP_200_OK
        return Response(body, status=code)


PACK_BODY: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"templates": {"type": "array", "items": {"type": "object"}}},
            "required": ["templates"],
            "description": "The orchestrator seed's templates.json.",
        },
        {"type": "array", "items": {"type": "object"}},
    ]
}


class TemplateImport(APIView):
    """POST the orchestrator seed's template pack (templates.json). All or nothing; a template
    of the same name is updated, so importing again changes nothing."""

    permission_classes = [TemplatePermission]
    needs = ["add", "change"]

    @extend_schema(
        request={"application/json": PACK_BODY},
        responses={
            200: inline_serializer(
                "ImportedTemplates",
                {
                    "templates": inline_serializer(
                        "ImportedTemplate",
                        {
                            "name": serializers.CharField(),
                            "outcome": serializers.ChoiceField(
                                choices=["created", "updated", "unchanged"]
                            ),
                        },
                        many=True,
                    )
                },
            ),
            400: error("A malformed pack: `errors` names each problem; nothing was imported."),
            403: error("You may not add and change templates."),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            done = service.import_pack(request.data, actor=actor_of(request), user=request.user)
        except DefinitionError as exc:
            return invalid(exc, "invalid template pack")
        rows = [{"name": item.template.name, "outcome": item.outcome} for item in done]
        return Response({"templates": rows})
