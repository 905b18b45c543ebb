"""Pieces of the OpenAPI description (drf-spectacular) that several API modules share.

Every API error is one JSON shape, made by orchestrator/errors.py; `ErrorSerializer` describes it
and `error()` makes the response that uses it. Nothing here changes what an endpoint does.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiViewExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers

from runs.engine.states import RunStatus


class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField(
        help_text="Where: a field such as `input.count` or `steps.deploy.needs[0]`; "
        "empty for the body as a whole."
    )
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    """What every API error answers (orchestrator.errors.exception_handler)."""

    message = serializers.CharField()
    errors = ProblemSerializer(
        many=True, required=False, help_text="For an invalid request (400): every problem found."
    )


def error(description: str) -> OpenApiResponse:
    """An error response: the shared body, with what this status means for this endpoint."""
    return OpenApiResponse(ErrorSerializer, description=description)


INVALID = error("Invalid request: `errors` names each problem and where it is.")

UNAUTHENTICATED = "Not authenticated: send `Authorization: Token <key>` or a session cookie."


def run_status_choices() -> list[tuple[str, str]]:
    """Run.status's choices, for ENUM_NAME_OVERRIDES (the name `RunStatusEnum`)."""
    return [(s.value, s.value) for s in RunStatus]


def add_unauthenticated_responses(
    result: dict[str, Any], generator: Any, **kwargs: Any
) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: every operation that needs credentials may answer 401.

    An operation that needs none has no `security`, or lists `{}` among its choices.
    """
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security")
            if not security or {} in security:
                continue
            operation["responses"].setdefault(
                "401",
                {
                    "description": UNAUTHENTICATED,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            )
    return result


THROTTLED = (
    "Too many requests (FURROW_THROTTLE_USER per user, FURROW_THROTTLE_ANON per address without "
    "one): wait the seconds `Retry-After` says."
)
TOO_LARGE = "The body is over FURROW_MAX_BODY_BYTES (1 MiB by default); nothing was read."


def _error_response(description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        **extra,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def add_limit_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: every operation may answer 429 (orchestrator/throttling.py), and
    every one that takes a body 413 (orchestrator.middleware.LimitRequestBody)."""
    retry_after = {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds until the client may send again.",
        }
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation["responses"]
            responses.setdefault("429", _error_response(THROTTLED, headers=retry_after))
            if "requestBody" in operation:
                responses.setdefault("413", _error_response(TOO_LARGE))
    return result


# flows/trigger_api.py's views say nothing of their errors themselves; these extensions describe
# them without touching the views (drf-spectacular's way for views one does not decorate).
NO_TRIGGER = error("No such trigger.")
INVALID_TRIGGER = error("Invalid trigger: `errors` names each problem and where it is.")


def _described(view: type, **methods: Any) -> type:
    return extend_schema_view(**methods)(type(view.__name__, (view,), {}))


class TriggerListSchema(OpenApiViewExtension):
    target_class = "flows.trigger_api.TriggerList"

    def view_replacement(self) -> type:
        from flows.trigger_api import TriggerSerializer

        return _described(
            self.target_class,
            get=extend_schema(responses={200: TriggerSerializer(many=True), 400: INVALID}),
            post=extend_schema(responses={201: TriggerSerializer, 400: INVALID_TRIGGER}),
        )


class WorkflowTriggersSchema(OpenApiViewExtension):
    target_class = "flows.trigger_api.WorkflowTriggers"

    def view_replacement(self) -> type:
        from flows.trigger_api import TriggerSerializer

        no_workflow = error("No workflow of that name.")
        return _described(
            self.target_class,
            get=extend_schema(
                responses={200: TriggerSerializer(many=True), 400: INVALID, 404: no_workflow}
            ),
            post=extend_schema(
                description="`workflow` defaults to the one in the path.",
                responses={201: TriggerSerializer, 400: INVALID_TRIGGER, 404: no_workflow},
            ),
        )


class TriggerDetailSchema(OpenApiViewExtension):
    target_class = "flows.trigger_api.TriggerDetail"

    def view_replacement(self) -> type:
        from flows.trigger_api import TriggerSerializer

        change = {200: TriggerSerializer, 400: INVALID_TRIGGER, 404: NO_TRIGGER}
        return _described(
            self.target_class,
            get=extend_schema(responses={200: TriggerSerializer, 404: NO_TRIGGER}),
            put=extend_schema(responses=change),
            patch=extend_schema(responses=change),
            delete=extend_schema(
                responses={204: OpenApiResponse(description="Deleted."), 404: NO_TRIGGER}
            ),
        )


class TriggerSwitchSchema(OpenApiViewExtension):
    """POST enable / disable."""

    target_class = "flows.trigger_api.TriggerSwitch"

    def view_replacement(self) -> type:
        from flows.trigger_api import TriggerSerializer

        return _described(
            self.target_class,
            post=extend_schema(
                request=None,
                responses={200: TriggerSerializer, 400: INVALID_TRIGGER, 404: NO_TRIGGER},
            ),
        )


# flows/grant_api.py (new, in progress elsewhere) is described the same way, as it stands.
class WorkflowGrantsSchema(OpenApiViewExtension):
    target_class = "flows.grant_api.WorkflowGrants"

    def view_replacement(self) -> type:
        from flows.grant_api import GrantSerializer

        no_workflow = error("No workflow of that name.")
        return _described(
            self.target_class,
            get=extend_schema(
                responses={200: GrantSerializer(many=True), 400: INVALID, 404: no_workflow}
            ),
            post=extend_schema(
                request=GrantSerializer,
                responses={201: GrantSerializer, 400: INVALID, 404: no_workflow},
            ),
        )


class WorkflowGrantDetailSchema(OpenApiViewExtension):
    target_class = "flows.grant_api.WorkflowGrantDetail"

    def view_replacement(self) -> type:
        return _described(
            self.target_class,
            delete=extend_schema(
                responses={
                    204: OpenApiResponse(description="Revoked."),
                    404: error("No such grant on that workflow."),
                }
            ),
        )


class TriggerSerializerSchema(OpenApiSerializerExtension):
    """`last_run` is null until the trigger first fires; the field does not say so itself."""

    target_class = "flows.trigger_api.TriggerSerializer"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = super().map_serializer(auto_schema, direction)
        if "last_run" in schema.get("properties", {}):
            schema["properties"]["last_run"]["nullable"] = True
        return schema
