"""Pages under the admin for what the steps run on: target health and the workers.

Targets, breakers, rate limits and workers belong to no workflow: every staff user may look
(the admin's login is the gate), as the API's worker list lets staff look. Changing them is
the admin's actions (check now, reset a breaker).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from flows.language.spec import DEFAULT_QUEUE
from orchestrator.admin_site import page_path, render_page
from runs.dashboard import worker_rows
from runs.engine.states import StepStatus
from runs.models import StepRun
from steps import health
from steps.models import CircuitBreaker, RateLimit, TargetHealth

LIMIT = 200


def urls(wrap: Any) -> list[Any]:
    return [
        page_path("health/", health_page, "health-page", wrap),
        page_path("workers/", workers_page, "workers-page", wrap),
    ]


@require_GET
def health_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {
        "title": "Health",
        "targets": list(TargetHealth.objects.order_by("status", "key")[:LIMIT]),
        "breakers": list(CircuitBreaker.objects.order_by("state", "key")[:LIMIT]),
        "limits": [_bucket(row, now) for row in RateLimit.objects.order_by("key")[:LIMIT]],
        "interval": health.interval(),
        "timeout": health.timeout(),
    }
    return render_page(request, "furrow/health.html", context)


def _bucket(row: RateLimit, now: datetime) -> dict[str, Any]:
    """The bucket as it stands now: the stored tokens refilled since it was last written."""
    elapsed = max((now - row.updated_at).total_seconds(), 0.0)
    return {"limit": row, "available": min(row.burst, row.tokens + row.rate * elapsed)}


@require_GET
def workers_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = worker_rows(now)
    context = {
        "title": "Workers",
        "workers": rows,
        "queues": queue_depths(rows),
    }
    return render_page(request, "furrow/workers.html", context)


def queue_depths(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each queue with its ready steps not yet claimed, and the workers (not gone) serving it
    with their capacity for it. Queues no live worker serves are listed too: their steps wait for one."""
    ready = dict(
        StepRun.objects.filter(status=StepStatus.READY)
        .values_list("queue")
        .annotate(n=Count("pk"))
        .order_by()
    )
    served: dict[str, list[Any]] = {}
    for row in rows:
        if row["state"] != "gone":
            for queue in row["worker"].queues:
                served.setdefault(queue, []).append(row)
    names = sorted(set(ready) | set(served) | {DEFAULT_QUEUE})
    return [
        {
            "name": name,
            "ready": ready.get(name, 0),
            "workers": [row["worker"].name for row in served.get(name, [])],
            # A worker's capacity is per queue times its queues: its share for this one.
            "capacity": sum(
                row["worker"].capacity // max(len(row["worker"].queues), 1)
                for row in served.get(name, [])
            ),
        }
        for name in names
    ]
