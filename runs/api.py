"""Run API: start runs, show them with their steps, events and logs. Thin: state changes are services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.models import Workflow
from runs import services
from runs.engine.states import RunStatus
from runs.models import Event, LogLine, Run
from runs.serializers import (
    EventSerializer,
    LogLineSerializer,
    RunDetailSerializer,
    RunSerializer,
    StartRunSerializer,
)

MAX_PAGE = 10_000


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return data.encode() if isinstance(data, str) else str(data).encode()


def run_detail_queryset() -> QuerySet[Run]:
    return Run.objects.select_related("workflow", "version").prefetch_related("steps")


def _cursor(request: Request, name: str = "after") -> int:
    raw = request.query_params.get(name, "0")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: f"must be an integer id, not {raw!r}"}) from None
    if value < 0:
        raise ValidationError({name: "must not be negative"})
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


class WorkflowRuns(generics.ListAPIView):
    """GET: the workflow's runs, newest first. POST `{"input": {...}}`: start a run (201)."""

    serializer_class = RunSerializer

    def get_queryset(self) -> QuerySet[Run]:
        workflow = get_object_or_404(Workflow, name=self.kwargs["name"])
        return Run.objects.filter(workflow=workflow).select_related("workflow", "version")

    def post(self, request: Request, name: str) -> Response:
        workflow = get_object_or_404(Workflow.objects.select_related("latest_version"), name=name)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ValidationError(
                {"non_field_errors": 'the body must be an object such as {"input": {...}}'}
            )
        extra = sorted(set(body) - {"input"})
        if extra:
            raise ValidationError(dict.fromkeys(extra, "unknown field"))
        params = StartRunSerializer(data=body)
        params.is_valid(raise_exception=True)
        run = services.start_run(
            workflow,
            params.validated_data["input"],
            user=request.user,
            actor=f"user:{request.user.get_username()}",
            source="api",
        )
        return Response(
            RunDetailSerializer(run_detail_queryset().get(pk=run.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class RunList(generics.ListAPIView):
    serializer_class = RunSerializer

    def get_queryset(self) -> QuerySet[Run]:
        runs = Run.objects.select_related("workflow", "version")
        workflow = self.request.query_params.get("workflow")
        if workflow:
            runs = runs.filter(workflow__name=workflow)
        run_status = self.request.query_params.get("status")
        if run_status:
            if run_status not in {s.value for s in RunStatus}:  # `str in StrEnum` raises on 3.11
                raise ValidationError({"status": f"must be one of {', '.join(RunStatus)}"})
            runs = runs.filter(status=run_status)
        return runs


class RunDetail(generics.RetrieveAPIView):
    serializer_class = RunDetailSerializer
    queryset = run_detail_queryset()


class RunEvents(APIView):
    """The run's events in order; `?after=<id>` continues from a cursor."""

    def get(self, request: Request, pk: Any) -> Response:
        run = get_object_or_404(Run, pk=pk)
        events = (
            Event.objects.filter(run=run, id__gt=_cursor(request))
            .select_related("step_run")
            .order_by("id")[: _limit(request)]
        )
        return Response(EventSerializer(events, many=True).data)


class RunLogs(APIView):
    """The run's log lines. JSON by default; `Accept: text/plain` for plain text.

    `?step=<name>` keeps one step, `?after=<id>` continues from a cursor, `?limit=` caps the page.
    """

    renderer_classes = [JSONRenderer, PlainTextRenderer]

    def get(self, request: Request, pk: Any) -> Response | HttpResponse:
        run = get_object_or_404(Run, pk=pk)
        lines = LogLine.objects.filter(run=run, id__gt=_cursor(request)).select_related("step_run")
        step = request.query_params.get("step")
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
