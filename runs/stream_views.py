"""Server-sent events: a run's events, a run's log, and all events (filtered).

Async views under daphne: Django cancels the generator the moment the client leaves. Each message
carries its row id; reconnecting with `Last-Event-ID` (or `?after=`, which htmx's SSE extension
needs) resumes exactly after it. A comment every 15 s keeps proxies from closing an idle stream.
A run's streams end with an `end` event once the run has ended and everything was sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from rest_framework.authtoken.models import Token

from flows import access
from runs import streams, wakeups
from runs.models import Run, StepRun

KEEPALIVE = 15.0


async def authenticate(request: HttpRequest) -> Any:
    """The session's user, or the user of an `Authorization: Token <key>` header; None if neither."""
    user = await request.auser()
    if user.is_authenticated:
        return user
    header = request.headers.get("Authorization", "")
    if header.startswith("Token "):
        token = await Token.objects.select_related("user").filter(key=header[6:].strip()).afirst()
        if token is not None and token.user.is_active:
            return token.user
    return None


def _problem(status: int, message: str) -> JsonResponse:
    return JsonResponse({"message": message}, status=status)


async def _follow(
    fetch: Callable[..., list[dict[str, Any]]],
    cursor: int,
    event_name: Callable[[dict[str, Any]], str],
    ended: Callable[[], bool] | None,
    wake: tuple[str | None, tuple[str, ...]],
) -> AsyncIterator[str]:
    """Page through rows after `cursor` for ever (or until `ended` and drained).

    `wake` is (run or None, kinds of rows) whose commits wake this stream (runs/wakeups.py).
    """
    fetch_async = streams.reader(fetch)
    ended_async = streams.reader(ended) if ended else None
    await streams.release_connection()
    yield "retry: 1000\n\n"
    quiet_since = time.monotonic()
    with wakeups.listener.waiter(*wake) as waiter:
        while True:
            rows = await fetch_async(cursor)
            for row in rows:
                yield streams.sse_message(row, event_name(row))
                cursor = row["id"]
            if rows:
                quiet_since = time.monotonic()
                waiter.touched()
                if len(rows) == streams.PAGE:
                    continue
            elif ended_async is not None and await ended_async():
                # Ended, and the last page came after the end: nothing more will come once the
                # rows held back for a late commit (runs/frontier.py) are through too.
                if not await fetch_async(cursor, settled=False):
                    yield streams.sse_message({"id": cursor, "ended": True}, "end")
                    return
            elif time.monotonic() - quiet_since > KEEPALIVE:
                yield streams.sse_comment("keep-alive")
                quiet_since = time.monotonic()
            await waiter.wait()


def _response(body: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer a stream
    return response


def _cursor(request: HttpRequest) -> int:
    return streams.parse_cursor(request.headers.get("Last-Event-ID"), request.GET.get("after"))


async def run_events(request: HttpRequest, pk: Any) -> HttpResponse:
    user = await authenticate(request)
    if user is None:
        return _problem(401, "authentication required")
    if not await sync_to_async(streams.may_view_run)(user, str(pk)):
        return _problem(404, f"no run {pk}")
    try:
        cursor = _cursor(request)
    except ValueError as exc:
        return _problem(400, str(exc))
    run_id = str(pk)
    flt = streams.EventFilter(run=run_id)
    return _response(
        _follow(
            lambda after, **kw: streams.events_after(flt, after, **kw),
            cursor,
            lambda row: row["type"],
            lambda: streams.run_has_ended(run_id),
            (run_id, ("event",)),
        )
    )


async def run_logs(request: HttpRequest, pk: Any) -> HttpResponse:
    user = await authenticate(request)
    if user is None:
        return _problem(401, "authentication required")
    if not await sync_to_async(streams.may_view_run)(user, str(pk)):
        return _problem(404, f"no run {pk}")
    step = request.GET.get("step") or None
    if step and not await StepRun.objects.filter(run_id=pk, name=step).aexists():
        return _problem(400, f"run has no step '{step}'")
    try:
        cursor = _cursor(request)
    except ValueError as exc:
        return _problem(400, str(exc))
    run_id = str(pk)
    streams_wanted = tuple(s for s in request.GET.getlist("stream") if s)
    flt = streams.LogFilter(run=run_id, step=step, streams=streams_wanted)
    return _response(
        _follow(
            lambda after, **kw: streams.lines_after(flt, after, **kw),
            cursor,
            lambda row: "log",
            lambda: streams.run_has_ended(run_id),
            (run_id, ("log",)),
        )
    )


async def all_events(request: HttpRequest) -> HttpResponse:
    user = await authenticate(request)
    if user is None:
        return _problem(401, "authentication required")
    try:
        cursor = _cursor(request)
        types = streams.type_patterns(request.GET.getlist("type"))
    except ValueError as exc:
        return _problem(400, str(exc))
    flt = streams.EventFilter(
        run=request.GET.get("run") or None,
        workflow=request.GET.get("workflow") or None,
        types=types,
        workflow_ids=await sync_to_async(access.workflow_ids)(user, "view"),
    )
    if flt.run:
        try:
            await Run.objects.filter(pk=flt.run).aexists()
        except Exception:  # a malformed uuid
            return _problem(400, f"run must be a run id, not {flt.run!r}")
    return _response(
        _follow(
            lambda after, **kw: streams.events_after(flt, after, **kw),
            cursor,
            lambda r: r["type"],
            None,
            (flt.run, ("event",)),
        )
    )
