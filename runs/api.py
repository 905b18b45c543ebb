"""Run API: start runs, show them with their steps, events and logs. Thin: state changes are services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.api_access import VisibleWorkflowsFilter
from flows.models import Workflow
from orchestrator.schema import INVALID, error
from orchestrator.throttling import CallbackThrottle
from runs import recovery, services
from runs.audit_api import StrictOrdering
from runs.filters import ApprovalFilter, DeadLetterFilter, RunFilter, WorkflowRunFilter
from runs.models import Approval, DeadLetter, Event, LogLine, Run
from runs.serializers import (
    ApprovalSerializer,
    DeadLetterSerializer,
    DecisionSerializer,
    EventSerializer,
    LogLineSerializer,
    LogPageSerializer,
    RerunSerializer,
    RunDetailSerializer,
    RunSerializer,
    StartRunSerializer,
    WorkflowPausedSerializer,
)
from steps.executors.base import StepResult

MAX_PAGE = 10_000

NO_RUN = error("No such run.")
NO_WORKFLOW = error("No workflow of that name.")
NO_DEAD_LETTER = error("No such dead letter.")
AFTER = OpenApiParameter(
    "after", {"type": "integer", "minimum": 0}, description="Only ids above this cursor."
)
LIMIT = OpenApiParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    description="At most this many (default 1000).",
)


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return data.encode() if isinstance(data, str) else str(data).encode()


def run_detail_queryset() -> QuerySet[Run]:
    return Run.objects.select_related("workflow", "version", "parent_step").prefetch_related(
        "steps"
    )


def _cursor(request: Request, name: str = "after") -> int:
    raw = request.query_params.get(name, "0")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: f"must be an integer id, not {raw!r}"}) from None
    if value < 0:
        raise ValidationError({name: "must not be negative"})
    return value


def _text(request: Request, name: str) -> str:
    """A free-text query parameter ("" if absent). A NUL in it is a 400, as DRF's CharField says:
    PostgreSQL cannot compare text with one (`?workflow=a%00b` was a 500)."""
    value = request.query_params.get(name, "")
    if "\x00" in value:
        raise ValidationError({name: "Null characters are not allowed."})
    return value


def _limit(request: Request, default: int = 1000) -> int:
    raw = request.query_params.get("limit", str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({"limit": f"must be an integer, not {raw!r}"}) from None
    if not 1 <= value <= MAX_PAGE:
        raise ValidationError({"limit": f"must be between 1 and {MAX_PAGE}"})
    return value


LISTS = [VisibleWorkflowsFilter, DjangoFilterBackend, StrictOrdering]
"""Filter backends of the lists here: what the user may view, then `?...=` and `?ordering=`."""
RUN_ORDERING = ["created_at", "started_at", "finished_at", "priority"]


@extend_schema_view(
    get=extend_schema(responses={200: RunSerializer(many=True), 400: INVALID, 404: NO_WORKFLOW})
)
class WorkflowRuns(generics.ListAPIView):
    """GET: the workflow's runs, newest first (`?status=`, `?ordering=`). POST `{"input": {...}}`:
    start a run (201)."""

    serializer_class = RunSerializer
    filter_backends = LISTS
    filterset_class = WorkflowRunFilter
    ordering_fields = RUN_ORDERING
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[Run]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, without a name
            return Run.objects.none()
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return Run.objects.filter(workflow=workflow).select_related(
            "workflow", "version", "parent_step"
        )

    @extend_schema(
        request=StartRunSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Used when the body has no `idempotency_key`.",
            )
        ],
        responses={
            201: OpenApiResponse(RunDetailSerializer, description="The run started (or queued)."),
            200: OpenApiResponse(
                RunDetailSerializer, description="The run this idempotency key already started."
            ),
            400: error("Invalid body, or input that does not fit the workflow's input schema."),
            404: NO_WORKFLOW,
            409: error(
                "The workflow has no published version, or the idempotency key was used with "
                "another input."
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow.objects.select_related("latest_version"), name=name)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ValidationError(
                {"non_field_errors": 'the body must be an object such as {"input": {...}}'}
            )
        extra = sorted(set(body) - {"input", "idempotency_key", "priority"})
        if extra:
            raise ValidationError(dict.fromkeys(extra, "unknown field"))
        header_key = request.headers.get("Idempotency-Key", "")
        if header_key and "idempotency_key" not in body:
            body = {**body, "idempotency_key": header_key}
        params = StartRunSerializer(data=body)
        params.is_valid(raise_exception=True)
        run = services.start_run(
            workflow,
            params.validated_data["input"],
            user=request.user,
            actor=_actor(request),
            source="api",
            idempotency_key=params.validated_data["idempotency_key"],
            priority=params.validated_data["priority"],
        )
        created = getattr(run, "created", True)
        return Response(
            RunDetailSerializer(run_detail_queryset().get(pk=run.pk)).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


@extend_schema_view(get=extend_schema(responses={200: RunSerializer(many=True), 400: INVALID}))
class RunList(generics.ListAPIView):
    """Runs, newest first: `?workflow=`, `?status=`, `?ordering=`."""

    serializer_class = RunSerializer
    filter_backends = LISTS
    filterset_class = RunFilter
    ordering_fields = RUN_ORDERING
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[Run]:
        return Run.objects.select_related("workflow", "version", "parent_step")


@extend_schema_view(get=extend_schema(responses={200: RunDetailSerializer, 404: NO_RUN}))
class RunDetail(generics.RetrieveAPIView):
    serializer_class = RunDetailSerializer
    queryset = run_detail_queryset()


class RunEvents(APIView):
    """The run's events in order; `?after=<id>` continues from a cursor."""

    @extend_schema(
        parameters=[AFTER, LIMIT],
        responses={200: EventSerializer(many=True), 400: INVALID, 404: NO_RUN},
    )
    def get(self, request: Request, pk: Any) -> Response:
        run = get_object_or_404(Run, pk=pk)
        events = (
            Event.objects.filter(run=run, id__gt=_cursor(request))
            .select_related("step_run")
            .order_by("id")[: _limit(request)]
        )
        return Response(EventSerializer(events, many=True).data)


ERROR_AS_TEXT = OpenApiResponse(
    OpenApiTypes.STR, description="With `Accept: text/plain` or `?format=txt`: the error as text."
)


class RunLogs(APIView):
    """The run's log lines. JSON by default; `Accept: text/plain` for plain text.

    `?step=<name>` keeps one step, `?after=<id>` continues from a cursor, `?limit=` caps the page.
    """

    renderer_classes = [JSONRenderer, PlainTextRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("step", str, description="Only this step's lines."),
            AFTER,
            LIMIT,
        ],
        responses={
            (200, "application/json"): LogPageSerializer,
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="`[step] text` per line, `[-]` for run-level lines."
            ),
            (400, "application/json"): INVALID,
            (404, "application/json"): NO_RUN,
            # DRF renders an error with the renderer it chose for the request.
            (400, "text/plain"): ERROR_AS_TEXT,
            (404, "text/plain"): ERROR_AS_TEXT,
        },
    )
    def get(self, request: Request, pk: Any) -> Response | HttpResponse:
        run = get_object_or_404(Run, pk=pk)
        lines = LogLine.objects.filter(run=run, id__gt=_cursor(request)).select_related("step_run")
        step = _text(request, "step")
        if step:
            if not run.steps.filter(name=step).exists():
                raise ValidationError({"step": f"run has no step '{step}'"})
            lines = lines.filter(step_run__name=step)
        page = list(lines.order_by("id")[: _limit(request)])
        if request.accepted_renderer.format == "txt":
            text = "".join(
                f"[{line.step_run.name if line.step_run else '-'}] {line.text}\n" for line in page
            )
            return HttpResponse(text, content_type="text/plain; charset=utf-8")
        return Response(
            {
                "run": str(run.pk),
                "lines": LogLineSerializer(page, many=True).data,
                "next_after": page[-1].id if page else _cursor(request),
            }
        )


class RunCancel(APIView):
    """POST: cancel a run that has not ended (and its child runs). 409 if it already ended."""

    @extend_schema(
        request=inline_serializer(
            "Cancel",
            {
                "reason": serializers.CharField(
                    required=False, allow_blank=True, max_length=1000, trim_whitespace=False
                )
            },
        ),
        responses={
            200: RunDetailSerializer,
            400: INVALID,
            404: NO_RUN,
            409: error("The run already ended."),
        },
    )
    def post(self, request: Request, pk: Any) -> Response:
        run = get_object_or_404(Run, pk=pk)
        body = request.data if isinstance(request.data, dict) else {}
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 1000:
            raise ValidationError({"reason": "must be a string of at most 1000 characters"})
        services.cancel_run(run, actor=f"user:{request.user.get_username()}", reason=reason)
        return Response(RunDetailSerializer(run_detail_queryset().get(pk=run.pk)).data)


class CallbackView(APIView):
    """POST: a service completes the http_async step that gave it this single-use URL.

    The token is the credential, so no user authentication applies. The body is
    `{"output": {...}}` or `{"error": "..."}`, or Spuds' `{"success": bool, "outputs": {...},
    "error": "..."}`. A malformed body is a 400 and leaves the token usable; an unknown token is a
    404; a used or expired one, or one whose step no longer waits, is a 410.
    """

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [CallbackThrottle]

    @extend_schema(
        request=inline_serializer(
            "Callback",
            {
                "output": serializers.DictField(required=False, allow_null=True),
                "outputs": serializers.DictField(
                    required=False, allow_null=True, help_text="Spuds' name for `output`."
                ),
                "error": serializers.CharField(
                    required=False,
                    allow_null=True,
                    help_text="Non-blank: the step failed with this message.",
                ),
                "success": serializers.BooleanField(required=False, allow_null=True),
            },
        ),
        responses={
            200: inline_serializer(
                "CallbackAccepted",
                {
                    "run": serializers.UUIDField(),
                    "step": serializers.CharField(),
                    "accepted": serializers.BooleanField(),
                },
            ),
            400: error("Malformed body; the token stays usable."),
            404: error("Unknown token."),
            410: error("The token was used or expired, or its step no longer waits."),
        },
    )
    def post(self, request: Request, token: str) -> Response:
        result = callback_result(request.data)
        try:
            step = services.deliver_callback(token, result)
        except services.CallbackRejected as exc:
            code = status.HTTP_410_GONE if exc.gone else status.HTTP_404_NOT_FOUND
            return Response({"message": str(exc)}, status=code)
        return Response({"run": str(step.run_id), "step": step.name, "accepted": True})


MAX_CALLBACK_ERROR = 10_000


def callback_result(body: Any) -> StepResult:
    """The StepResult a callback body describes; ValidationError (400) when it is malformed."""
    if not isinstance(body, dict):
        raise ValidationError(
            {"non_field_errors": 'the body must be a JSON object such as {"output": {...}}'}
        )
    known = {"success", "output", "outputs", "error"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "unknown field"))
    if "output" in body and "outputs" in body:
        raise ValidationError({"outputs": "give output or outputs, not both"})
    output_key = "outputs" if "outputs" in body else "output"
    output = body.get(output_key, {})
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise ValidationError({output_key: "must be an object"})
    error = body.get("error")
    if error is not None and (not isinstance(error, str) or not error.strip()):
        raise ValidationError({"error": "must be a non-empty string"})
    success = body.get("success")
    if success is not None and not isinstance(success, bool):
        raise ValidationError({"success": "must be true or false"})
    ok = success if success is not None else error is None
    if ok and error is not None and success is None:
        ok = False
    if not ok:
        message = (error or "the service reported a failure")[:MAX_CALLBACK_ERROR]
        return StepResult.failure(message, output=output or None)
    return StepResult.success(output)


@extend_schema_view(get=extend_schema(responses={200: ApprovalSerializer(many=True), 400: INVALID}))
class ApprovalList(generics.ListAPIView):
    """Approvals, newest first: `?status=pending` (the inbox), `?run=<id>`, `?workflow=<name>`,
    `?mine=1` (only those the caller may decide), `?ordering=`."""

    serializer_class = ApprovalSerializer
    filter_backends = LISTS
    filterset_class = ApprovalFilter
    ordering_fields = ["created_at", "expires_at", "decided_at"]
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[Approval]:
        return Approval.objects.select_related("run__workflow", "step_run", "decided_by")


class RunApproval(APIView):
    """POST `{"decision": "approve"|"reject", "comment": ..., "data": {...}}` decides the pending
    approval of a step: 200 with the approval; 409 when there is none (or another decision won);
    403 for someone not among its approvers; 400 when `data` does not fit its form."""

    @extend_schema(
        request=DecisionSerializer,
        responses={
            200: ApprovalSerializer,
            400: error("Invalid body, or `data` that does not fit the approval's form."),
            403: error("The caller is not among the approvers."),
            404: NO_RUN,
            409: error("The step has no pending approval, or another decision won."),
        },
    )
    def post(self, request: Request, pk: Any, step: str) -> Response:
        run = get_object_or_404(Run, pk=pk)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ValidationError(
                {"non_field_errors": 'the body must be an object such as {"decision": "approve"}'}
            )
        extra = sorted(set(body) - {"decision", "comment", "data"})
        if extra:
            raise ValidationError(dict.fromkeys(extra, "unknown field"))
        params = DecisionSerializer(data=body)
        params.is_valid(raise_exception=True)
        try:
            approval = services.decide(
                run,
                step,
                params.validated_data["decision"],
                user=request.user,
                comment=params.validated_data["comment"],
                data=params.validated_data["data"],
            )
        except services.NotAnApprover as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(ApprovalSerializer(approval).data)


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


class RunPause(APIView):
    """POST: nothing new starts in the run; running steps finish. 409 unless it is running."""

    @extend_schema(
        request=None,
        responses={200: RunDetailSerializer, 404: NO_RUN, 409: error("The run is not running.")},
    )
    def post(self, request: Request, pk: Any) -> Response:
        run = services.pause_run(get_object_or_404(Run, pk=pk), actor=_actor(request))
        return Response(RunDetailSerializer(run_detail_queryset().get(pk=run.pk)).data)


class RunResume(APIView):
    """POST: a paused run goes on. 409 unless it is paused."""

    @extend_schema(
        request=None,
        responses={200: RunDetailSerializer, 404: NO_RUN, 409: error("The run is not paused.")},
    )
    def post(self, request: Request, pk: Any) -> Response:
        run = services.resume_run(get_object_or_404(Run, pk=pk), actor=_actor(request))
        return Response(RunDetailSerializer(run_detail_queryset().get(pk=run.pk)).data)


class RunRerun(APIView):
    """POST `{}` retries an ended run from its failed steps, keeping what succeeded;
    `{"from_step": s, "input": {...}}` runs s and everything after it again (with new input);
    `{"only_step": s}` replays s alone. 201 with the new run (`rerun_of` links them)."""

    @extend_schema(
        request=RerunSerializer,
        responses={
            201: RunDetailSerializer,
            400: INVALID,
            404: NO_RUN,
            409: error(
                "The run has not ended, names no such step, or both from_step and only_step."
            ),
        },
    )
    def post(self, request: Request, pk: Any) -> Response:
        old = get_object_or_404(Run.objects.select_related("version", "workflow"), pk=pk)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ValidationError({"non_field_errors": "the body must be an object"})
        extra = sorted(set(body) - {"from_step", "only_step", "input"})
        if extra:
            raise ValidationError(dict.fromkeys(extra, "unknown field"))
        params = RerunSerializer(data=body)
        params.is_valid(raise_exception=True)
        new = recovery.rerun(old, user=request.user, actor=_actor(request), **params.validated_data)
        return Response(
            RunDetailSerializer(run_detail_queryset().get(pk=new.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class WorkflowPause(APIView):
    @extend_schema(
        request=None,
        responses={
            200: WorkflowPausedSerializer,
            404: NO_WORKFLOW,
            409: error("The workflow is already paused."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        workflow = services.pause_workflow(
            get_object_or_404(Workflow, name=name), actor=_actor(request)
        )
        return Response({"name": workflow.name, "paused": workflow.paused})


class WorkflowResume(APIView):
    @extend_schema(
        request=None,
        responses={
            200: WorkflowPausedSerializer,
            404: NO_WORKFLOW,
            409: error("The workflow is not paused."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        workflow = services.resume_workflow(
            get_object_or_404(Workflow, name=name), actor=_actor(request)
        )
        return Response({"name": workflow.name, "paused": workflow.paused})


@extend_schema_view(
    get=extend_schema(responses={200: DeadLetterSerializer(many=True), 400: INVALID})
)
class DeadLetterList(generics.ListAPIView):
    """Dead letters, newest first; `?status=open|requeued|discarded`, `?workflow=`, `?run=`,
    `?ordering=`."""

    serializer_class = DeadLetterSerializer
    filter_backends = LISTS
    filterset_class = DeadLetterFilter
    ordering_fields = ["created_at", "resolved_at"]
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return DeadLetter.objects.select_related("run__workflow", "step_run", "resolved_by")


@extend_schema_view(get=extend_schema(responses={200: DeadLetterSerializer, 404: NO_DEAD_LETTER}))
class DeadLetterDetail(generics.RetrieveAPIView):
    serializer_class = DeadLetterSerializer
    queryset = DeadLetter.objects.select_related("run__workflow", "step_run", "resolved_by")


class DeadLetterRequeue(APIView):
    """POST: run the step again with fresh attempts, reopening its run. 409 unless open."""

    @extend_schema(
        request=None,
        responses={
            200: DeadLetterSerializer,
            404: NO_DEAD_LETTER,
            409: error("The dead letter is not open, or its run cannot go on."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        letter = get_object_or_404(DeadLetter, pk=pk)
        recovery.requeue_dead_letter(letter, user=request.user, actor=_actor(request))
        letter.refresh_from_db()
        return Response(DeadLetterSerializer(letter).data)


class DeadLetterDiscard(APIView):
    """POST: close the dead letter without running anything. 409 unless open."""

    @extend_schema(
        request=None,
        responses={
            200: DeadLetterSerializer,
            404: NO_DEAD_LETTER,
            409: error("The dead letter is not open."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        letter = get_object_or_404(DeadLetter, pk=pk)
        recovery.discard_dead_letter(letter, user=request.user, actor=_actor(request))
        letter.refresh_from_db()
        return Response(DeadLetterSerializer(letter).data)
