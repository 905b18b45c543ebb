"""`manage.py bench --scenario page`: the run page of a 500-step run, rendered server-side.

A workflow of 50 layers of 10 noop steps (each needs two steps of the layer before: a graph with
crossings to lay out) runs to the end in this process, with log lines; then the page is fetched
through the whole Django stack (middleware, login, template) as a logged-in superuser. Reported:
the first render (the layout is computed and cached per version), the median and p95 of the
next ones, the live part htmx asks for on each event, and the SQL statements of one render.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django_q.conf import Conf

from flows import services as flow_services
from flows.models import Workflow
from runs import services
from runs.models import LogLine, Run, StepRun

NAME = "bench-page-500"
LAYERS, WIDTH = 50, 10
LOG_LINES = 2000
USER = "bench-page"


def definition() -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for layer in range(LAYERS):
        for i in range(WIDTH):
            step: dict[str, Any] = {"type": "noop"}
            if layer:
                step["needs"] = sorted({f"l{layer - 1}s{i}", f"l{layer - 1}s{(i * 3 + 1) % WIDTH}"})
            steps[f"l{layer}s{i}"] = step
    return {"name": NAME, "description": "bench: the run page of 500 steps", "steps": steps}


def _finished_run() -> Run:
    workflow = flow_services.publish(definition(), actor="bench").version.workflow
    saved = Conf.SYNC
    Conf.SYNC = True  # run every step here, without a broker
    try:
        run = services.start_run(workflow, {}, actor="bench", source="bench")
    finally:
        Conf.SYNC = saved
    run.refresh_from_db()
    steps = list(StepRun.objects.filter(run=run).values_list("id", flat=True))
    LogLine.objects.bulk_create(
        LogLine(
            run=run, step_run_id=steps[i % len(steps)], attempt=1, stream="stdout", text=f"line {i}"
        )
        for i in range(LOG_LINES)
    )
    return run


def measure(repeat: int = 10) -> dict[str, Any]:
    run = _finished_run()
    user, _ = get_user_model().objects.update_or_create(
        username=USER, defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    page = f"/admin/runs/{run.pk}/"
    live = f"/admin/runs/{run.pk}/live/"

    def fetch(url: str, **headers: str) -> float:
        started = time.perf_counter()
        response = client.get(url, **headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        return elapsed

    first = fetch(page)
    statements: list[str] = []

    def count(execute: Any, sql: str, *args: Any) -> Any:
        statements.append(sql)
        return execute(sql, *args)

    # A wrapper, not CaptureQueriesContext: each request's start clears the queries log.
    with connection.execute_wrapper(count):
        fetch(page)
    pages = sorted(fetch(page) for _ in range(max(repeat, 2)))
    lives = sorted(fetch(live, HTTP_HX_REQUEST="true") for _ in range(max(repeat, 2)))
    return {
        "steps": StepRun.objects.filter(run=run).count(),
        "status": run.status,
        "log_lines": LOG_LINES,
        "first_ms": round(first, 1),
        "page_ms": {"p50": round(statistics.median(pages), 1), "p95": round(_p95(pages), 1)},
        "live_ms": {"p50": round(statistics.median(lives), 1), "p95": round(_p95(lives), 1)},
        "sql": len(statements),
        "bytes": len(client.get(page).content),
        "repeat": len(pages),
    }


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.95))]


def clean_up() -> None:
    Run.objects.filter(workflow__name=NAME).delete()
    Workflow.objects.filter(name=NAME).delete()
    get_user_model().objects.filter(username=USER).delete()
