"""Streams are cursors over the log (DESIGN.md, principle 4).

Events and log lines are rows with increasing ids. A stream reads the rows after its cursor in
pages, hands them out, and waits a moment when there is nothing new. A client that reconnects with
the last id it saw (SSE's Last-Event-ID) resumes with nothing lost and nothing repeated, and a
stream's memory does not grow with the length of what it follows.

This module holds the queries and the message formats; the SSE views (runs/stream_views.py) and
the WebSocket consumers (runs/consumers.py) drive them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.db.models import Q

from flows import access
from runs.engine.states import RunStatus
from runs.frontier import frontier_of
from runs.models import Event, LogLine, Run

PAGE = 500
RUN_ENDS = tuple(f"run.{status}" for status in ("succeeded", "failed", "cancelled"))


@dataclass(frozen=True)
class EventFilter:
    """Which events a stream carries. Empty fields match everything."""

    run: str | None = None
    workflow: str | None = None
    types: tuple[str, ...] = ()
    """Exact types (`step.failed`) or prefixes ending in `.*` (`run.*`)."""
    workflow_ids: frozenset[int] | None = None
    """The workflows the client may view (flows/access.py); None: every one."""

    def query(self) -> Q:
        q = Q()
        if self.workflow_ids is not None:
            q &= Q(workflow_id__in=self.workflow_ids) | Q(run__workflow_id__in=self.workflow_ids)
        if self.run:
            q &= Q(run_id=self.run)
        if self.workflow:
            q &= Q(workflow__name=self.workflow) | Q(run__workflow__name=self.workflow)
        if self.types:
            by_type = Q()
            for pattern in self.types:
                if pattern.endswith(".*"):
                    by_type |= Q(type__startswith=pattern[:-1])
                elif pattern == "*":
                    by_type |= Q()
                else:
                    by_type |= Q(type=pattern)
            q &= by_type
        return q


@dataclass(frozen=True)
class LogFilter:
    run: str
    step: str | None = None
    streams: tuple[str, ...] = field(default=())


def _settled(rows: Any, model: type, settled: bool) -> Any:
    """Only rows no late commit can still slip in below (runs/frontier.py)."""
    upto = frontier_of(model).current() if settled else None
    return rows if upto is None else rows.filter(id__lte=upto)


def events_after(
    flt: EventFilter, after: int, limit: int = PAGE, *, settled: bool = True
) -> list[dict[str, Any]]:
    """The events after id `after`; `settled=False` includes rows past the frontier too."""
    rows = (
        _settled(Event.objects.filter(flt.query(), id__gt=after), Event, settled)
        .order_by("id")
        .values(
            "id",
            "type",
            "actor",
            "data",
            "created_at",
            "run_id",
            "step_run__name",
            "workflow__name",
            "run__workflow__name",
        )[:limit]
    )
    return [
        {
            "id": row["id"],
            "type": row["type"],
            "run": str(row["run_id"]) if row["run_id"] else None,
            "step": row["step_run__name"],
            "workflow": row["workflow__name"] or row["run__workflow__name"],
            "actor": row["actor"],
            "data": row["data"],
            "created_at": row["created_at"].isoformat(),
        }
        for row in rows
    ]


def lines_after(
    flt: LogFilter, after: int, limit: int = PAGE, *, settled: bool = True
) -> list[dict[str, Any]]:
    lines = _settled(LogLine.objects.filter(run_id=flt.run, id__gt=after), LogLine, settled)
    if flt.step:
        lines = lines.filter(step_run__name=flt.step)
    if flt.streams:
        lines = lines.filter(stream__in=flt.streams)
    rows = lines.order_by("id").values(
        "id", "attempt", "stream", "text", "created_at", "step_run__name"
    )[:limit]
    return [
        {
            "id": row["id"],
            "step": row["step_run__name"],
            "attempt": row["attempt"],
            "stream": row["stream"],
            "text": row["text"],
            "created_at": row["created_at"].isoformat(),
        }
        for row in rows
    ]


def may_view_run(user: Any, run_id: str) -> bool:
    """Whether the run exists for `user`: it exists and they may view its workflow. A run they
    may not view is answered like a missing one, so its existence does not leak."""
    workflow_id = Run.objects.filter(pk=run_id).values_list("workflow_id", flat=True).first()
    return workflow_id is not None and access.allowed(user, "view", workflow_id)


def run_has_ended(run_id: str) -> bool:
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    return status is None or RunStatus(status).is_final


def reader(fetch: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`fetch` for an async stream: on a pool thread, handing its connection back afterwards.

    Not thread-sensitive: a page query must not queue behind every other stream's on the one
    sync thread. `close_old_connections` keeps the process's own connection policy: the web
    process returns the connection to its pool after each query (orchestrator/env.py), a
    persistent connection stays open, a broken one is dropped so the next poll reconnects.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fetch(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False)


async def release_connection() -> None:
    """Hand back the connection a request's own thread used (auth, existence checks) before a
    long stream begins, so an open stream holds none while it waits."""
    await sync_to_async(close_old_connections)()


def sse_message(item: dict[str, Any], event: str) -> str:
    """One SSE message: its id is the cursor a reconnecting client sends back."""
    data = json.dumps(item, separators=(",", ":"), default=str)
    return f"id: {item['id']}\nevent: {event}\ndata: {data}\n\n"


def sse_comment(text: str) -> str:
    return f": {text}\n\n"


def parse_cursor(*candidates: str | None) -> int:
    """The first candidate that is a non-negative integer (Last-Event-ID, ?after=), else 0."""
    for raw in candidates:
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"a cursor must be an event id (an integer), not {raw!r}") from None
        if value < 0:
            raise ValueError("a cursor must not be negative")
        return value
    return 0


def type_patterns(raw: Iterable[str]) -> tuple[str, ...]:
    patterns = tuple(p.strip() for value in raw for p in value.split(",") if p.strip())
    for pattern in patterns:
        if not all(part.isidentifier() or part == "*" for part in pattern.split(".")):
            raise ValueError(f"not an event type or pattern: {pattern!r}")
    return patterns
