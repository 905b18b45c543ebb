"""The admin's index: what is happening now.

Everything here is narrowed to the workflows the user may view (flows/access.py), and costs a
fixed number of statements whatever the data: each list is one query with a limit, the hourly
chart one GROUP BY. The page polls `dashboard-live` for the same context (its `live` part).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncHour
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from flows import access
from runs import services
from runs.engine.states import RunStatus
from runs.models import Approval, Run
from steps import workers
from steps.models import CircuitBreaker, HealthStatus, TargetHealth, WorkerCluster
from steps.resilience_rules import BreakerState

HOURS = 24
LIMIT = 10
"""Rows in each list; the page links to the full one."""
CHART_HEIGHT = 60
BAR_WIDTH = 10
# Bottom to top in each hour's bar.
CHART_ORDER = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.RUNNING,
    RunStatus.PAUSED,
    RunStatus.QUEUED,
)


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class HourBar:
    start: datetime
    x: int
    total: int
    segments: tuple[Segment, ...]

    @property
    def label(self) -> str:
        parts = ", ".join(f"{s.count} {s.status}" for s in self.segments) or "no runs"
        return f"{self.start:%H:%M}: {parts}"


def dashboard_context(user: Any, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runs = access.visible(Run.objects.all(), user, "workflow_id")
    return {
        "title": "Dashboard",
        "now": now,
        **_activity(runs, now),
        "running": _running(runs),
        "failures": _failures(runs, now),
        **_approvals(user),
        **unhealthy(),
        "workers": worker_rows(now, live_only=True),
    }


def _activity(runs: QuerySet[Run], now: datetime) -> dict[str, Any]:
    """Runs created in the last HOURS hours: totals by status and one stacked bar per hour."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    rows = (
        runs.filter(created_at__gte=first)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    slots: list[dict[str, int]] = [{} for _ in range(HOURS)]
    totals: dict[str, int] = {}
    for hour, status, n in rows:
        index = int((hour - first).total_seconds() // 3600)
        if 0 <= index < HOURS:
            slots[index][status] = slots[index].get(status, 0) + n
            totals[status] = totals.get(status, 0) + n
    peak = max((sum(slot.values()) for slot in slots), default=0)
    bars = [
        _bar(first + timedelta(hours=i), i * BAR_WIDTH, slot, peak) for i, slot in enumerate(slots)
    ]
    return {
        "totals": [(status.value, totals.get(status, 0)) for status in CHART_ORDER],
        "total_runs": sum(totals.values()),
        "bars": bars,
        "chart_width": HOURS * BAR_WIDTH,
        "chart_height": CHART_HEIGHT,
        "chart_from": first,
    }


def _bar(start: datetime, x: int, counts: dict[str, int], peak: int) -> HourBar:
    segments, bottom = [], float(CHART_HEIGHT)
    for status in CHART_ORDER:
        count = counts.get(status, 0)
        if count:
            height = CHART_HEIGHT * count / peak
            bottom -= height
            segments.append(Segment(status.value, count, round(bottom, 2), round(height, 2)))
    return HourBar(start, x, sum(counts.values()), tuple(segments))


def _running(runs: QuerySet[Run]) -> list[Run]:
    return list(
        runs.filter(status=RunStatus.RUNNING)
        .select_related("workflow")
        .only("id", "status", "workflow__name", "created_at", "started_at")
        .order_by("-started_at")[:LIMIT]
    )


def _failures(runs: QuerySet[Run], now: datetime) -> list[dict[str, Any]]:
    rows = (
        runs.filter(status=RunStatus.FAILED, finished_at__gte=now - timedelta(hours=HOURS))
        .select_related("workflow")
        .only("id", "workflow__name", "finished_at", "error")
        .order_by("-finished_at")[:LIMIT]
    )
    return [{"run": run, "error": first_line(run.error)} for run in rows]


def first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line of an error, cut to `limit` characters."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def decidable_pending(user: Any) -> QuerySet[Approval]:
    """Pending approvals `user` may decide, of runs they may see (the run page decides them)."""
    pending = access.visible(Approval.objects.filter(status="pending"), user, "run__workflow_id")
    return services.decidable(pending, user)


def _approvals(user: Any) -> dict[str, Any]:
    pending = decidable_pending(user)
    rows = list(pending.select_related("run__workflow", "step_run").order_by("-created_at")[:LIMIT])
    # Always counted, so the statements do not depend on how many there are.
    return {"approvals": rows, "approvals_count": pending.count()}


def unhealthy() -> dict[str, Any]:
    """Targets whose last check failed and breakers that are not closed (no workflow's rows)."""
    return {
        "unhealthy_targets": list(
            TargetHealth.objects.filter(status=HealthStatus.UNHEALTHY).order_by("key")[:LIMIT]
        ),
        "open_breakers": list(
            CircuitBreaker.objects.exclude(state=BreakerState.CLOSED).order_by("key")[:LIMIT]
        ),
    }


def worker_rows(now: datetime, *, live_only: bool = False) -> list[dict[str, Any]]:
    """The worker registry with each one's load (one statement) and state."""
    rows = workers.with_load(WorkerCluster.objects.order_by("name"))
    if live_only:
        rows = rows.filter(stopped_at__isnull=True)
    return [
        {"worker": row, "state": workers.state(row, now).value, "load": getattr(row, "load", 0)}
        for row in rows[:100]
    ]


@require_GET
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """The dashboard's changing part, for htmx's polling; a plain visit gets the whole page."""
    if not request.htmx:
        return redirect("admin:index")
    return TemplateResponse(request, "furrow/dashboard.html#live", dashboard_context(request.user))
