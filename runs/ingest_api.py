"""`POST /api/v1/runs/{id}/logs`: external programs append log lines to a run (runs/ingest.py)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.parsers import PlainTextParser, SafeJSONParser
from orchestrator.schema import error
from runs import ingest
from runs.api import NO_RUN, RunLogs
from runs.models import Run
from runs.serializers import IngestLogsSerializer, LogsIngestedSerializer

BODY_FIELDS = frozenset({"lines", "stream", "step"})


class LinesJSONParser(SafeJSONParser):
    allow_nul = True  # ingest.storable() turns a NUL into U+FFFD, as for a text body


class RunLogsView(RunLogs):
    """GET: the run's log (RunLogs). POST: append lines from an external program; 201.

    The body is text (`Content-Type: text/plain`, any charset, UTF-8 by default), one line per
    line break, or JSON `{"lines": [...], "stream": ..., "step": ...}`. `?step=` and `?stream=`
    (stdout, stderr or external, the default) may be given instead of the JSON fields.
    400 for an unknown step, an empty body, or too many lines; 409 once the run has ended.
    """

    parser_classes = [PlainTextParser, LinesJSONParser]

    def get_renderers(self) -> list[BaseRenderer]:
        # RunLogs also renders text/plain; what POST answers is always JSON.
        if self.request.method == "POST":
            return [JSONRenderer()]
        return super().get_renderers()

    @extend_schema(
        request={"text/plain": OpenApiTypes.STR, "application/json": IngestLogsSerializer},
        parameters=[
            OpenApiParameter("step", str, description="Instead of the body's `step`."),
            OpenApiParameter(
                "stream",
                str,
                enum=[s.value for s in ingest.IngestStream],
                description="Instead of the body's `stream`.",
            ),
        ],
        responses={
            (201, "application/json"): LogsIngestedSerializer,
            (400, "application/json"): error(
                "An empty body, an unknown step or stream, or too many lines."
            ),
            (404, "application/json"): NO_RUN,
            (409, "application/json"): error("The run has ended: its log is closed."),
        },
    )
    def post(self, request: Request, pk: Any) -> Response:
        run = get_object_or_404(Run, pk=pk)
        lines, fields = _body(request)
        stream = _stream(_option(request, fields, "stream"))
        try:
            done = ingest.ingest_logs(
                run, lines, step=_option(request, fields, "step"), stream=stream
            )
        except ingest.UnknownStep as exc:
            raise ValidationError({"step": str(exc)}) from None
        except ingest.TooManyLines as exc:
            raise ValidationError({"lines": str(exc)}) from None
        return Response(
            {
                "run": str(run.pk),
                "step": done.step,
                "attempt": done.attempt,
                "accepted": done.accepted,
                "first_id": done.first_id,
                "last_id": done.last_id,
            },
            status=status.HTTP_201_CREATED,
        )


def _body(request: Request) -> tuple[list[str], dict[str, Any]]:
    """The lines a body holds and its other JSON fields; ValidationError unless it holds a line."""
    data = request.data
    if request.content_type.startswith("text/plain"):
        # An empty body is not parsed at all: DRF hands over {} instead of "".
        lines = ingest.split_lines(data if isinstance(data, str) else "")
        if not lines:
            raise ValidationError({"lines": "the body is empty: send at least one line"})
        return lines, {}
    if not isinstance(data, dict):
        raise ValidationError(
            {"non_field_errors": 'send text/plain, or JSON such as {"lines": ["a line"]}'}
        )
    unknown = sorted(set(data) - BODY_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "unknown field"))
    raw = data.get("lines")
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ValidationError({"lines": "must be a non-empty list of strings"})
    # An item with line breaks is several lines, as it would be in a text body.
    return [line for item in raw for line in ingest.split_lines(item) or [""]], data


def _option(request: Request, fields: dict[str, Any], name: str) -> str | None:
    """`name` from the JSON body or the query string (not both, unless they agree)."""
    given = fields.get(name)
    if given is not None and not isinstance(given, str):
        raise ValidationError({name: "must be a string"})
    query = request.query_params.get(name)
    if given and query and given != query:
        raise ValidationError({name: f"given twice: {given!r} in the body, {query!r} in the query"})
    return given or query or None


def _stream(value: str | None) -> ingest.IngestStream:
    if value is None:
        return ingest.IngestStream.EXTERNAL
    try:
        return ingest.IngestStream(value)
    except ValueError:
        raise ValidationError(
            {"stream": f"must be one of {', '.join(ingest.IngestStream)}"}
        ) from None
