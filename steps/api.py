"""Secret API: staff only. Values go in and never come out; writing is `steps.secrets`."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from orchestrator.filters import OTHER_LISTS
from orchestrator.schema import INVALID, error
from steps import secrets
from steps.filters import SecretFilter
from steps.models import Secret
from steps.serializers import SecretCreateSerializer, SecretSerializer, SecretUpdateSerializer


def _validated(serializer_class: type[Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _not_found(name: str) -> NotFound:
    return NotFound(f"unknown secret '{name}'")


NOT_STAFF = error("Only staff may see or change secrets.")
NO_SECRET = error("No secret of that name.")


@extend_schema_view(
    get=extend_schema(responses={200: SecretSerializer(many=True), 400: INVALID, 403: NOT_STAFF}),
    post=extend_schema(
        request=SecretCreateSerializer,
        responses={
            201: SecretSerializer,
            400: INVALID,
            403: NOT_STAFF,
            409: error("A secret of that name exists: PUT changes it."),
        },
    ),
)
class SecretList(generics.ListAPIView):
    """GET: secrets (never their values), by name: `?search=`, `?ordering=`. POST: add one."""

    permission_classes = [IsAdminUser]
    serializer_class = SecretSerializer
    queryset = Secret.objects.select_related("updated_by")
    filter_backends = OTHER_LISTS
    filterset_class = SecretFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]

    def post(self, request: Request) -> Response:
        data = _validated(SecretCreateSerializer, request)
        if Secret.objects.filter(name=data["name"]).exists():
            return Response(
                {
                    "message": f"secret '{data['name']}' already exists; PUT /api/v1/secrets/{data['name']} changes it"
                },
                status=status.HTTP_409_CONFLICT,
            )
        secret = secrets.set_secret(**data, user=request.user)
        return Response(SecretSerializer(secret).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(responses={200: SecretSerializer, 403: NOT_STAFF, 404: NO_SECRET}),
    put=extend_schema(
        request=SecretUpdateSerializer,
        responses={200: SecretSerializer, 400: INVALID, 403: NOT_STAFF, 404: NO_SECRET},
    ),
    patch=extend_schema(
        request=SecretUpdateSerializer,
        responses={200: SecretSerializer, 400: INVALID, 403: NOT_STAFF, 404: NO_SECRET},
    ),
    delete=extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted."),
            403: NOT_STAFF,
            404: NO_SECRET,
        }
    ),
)
class SecretDetail(APIView):
    """GET shows a secret (not its value); PUT and PATCH change its value and/or description."""

    permission_classes = [IsAdminUser]

    def get(self, request: Request, name: str) -> Response:
        secret = Secret.objects.select_related("updated_by").filter(name=name).first()
        if secret is None:
            raise _not_found(name)
        return Response(SecretSerializer(secret).data)

    def put(self, request: Request, name: str) -> Response:
        data = _validated(SecretUpdateSerializer, request)
        try:
            secret = secrets.update_secret(name, **data, user=request.user)
        except Secret.DoesNotExist:
            raise _not_found(name) from None
        return Response(SecretSerializer(secret).data)

    patch = put  # both are partial: the value is write-only, so a full replacement means nothing

    def delete(self, request: Request, name: str) -> Response:
        try:
            secrets.delete_secret(name, user=request.user)
        except Secret.DoesNotExist:
            raise _not_found(name) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
