"""A workflow's grants in the API: GET lists them, POST {"user" or "group", "role"} adds one
(editors only), DELETE .../grants/{id} removes one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows import grants
from flows.api import actor_of
from flows.filters import GrantFilter
from flows.models import Workflow, WorkflowGrant
from orchestrator.filters import WORKFLOW_LISTS


class GrantSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
    )
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True
    )
    role = serializers.ChoiceField(choices=WorkflowGrant.Role.choices)

    class Meta:
        model = WorkflowGrant
        fields = ["id", "user", "group", "role", "created_at"]
        read_only_fields = ["id", "created_at"]
        validators: list[Any] = []

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.initial_data, dict):
            unknown = sorted(set(self.initial_data) - {"user", "group", "role"})
            if unknown:
                raise ValidationError(dict.fromkeys(unknown, "unknown field"))
        if (data.get("user") is None) == (data.get("group") is None):
            raise ValidationError({"user": "name exactly one of a user or a group"})
        return data


class WorkflowGrants(generics.ListAPIView):
    """GET: the workflow's grants, by role (`?role=`, `?user=`, `?group=`, `?ordering=`)."""

    serializer_class = GrantSerializer
    filter_backends = WORKFLOW_LISTS
    filterset_class = GrantFilter
    ordering_fields = ["role", "created_at"]
    ordering = ["role", "id"]

    def get_queryset(self) -> QuerySet[WorkflowGrant]:
        if getattr(self, "swagger_fake_view", False):
            return WorkflowGrant.objects.none()
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return workflow.grants.select_related("user", "group")

    def post(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow, name=name)
        serializer = GrantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        made = grants.grant(workflow, **serializer.validated_data, actor=actor_of(request))
        return Response(GrantSerializer(made).data, status=status.HTTP_201_CREATED)


class WorkflowGrantDetail(APIView):
    def delete(self, request: Request, name: str, pk: int) -> Response:
        row = get_object_or_404(WorkflowGrant, pk=pk, workflow__name=name)
        grants.revoke(row, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
