"""HTMX pages under the admin for runs: the run page (graph, steps, logs, actions) and its parts.

The page is whole without JavaScript; with it, runs/static furrow.js follows the run's event
stream and asks for the `live` part again (debounced) whenever something happened, and follows
the log stream into the log viewer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from flows import access
from flows.pages import graph_svg
from orchestrator.admin_site import page_path, render_page
from orchestrator.schema_form import SchemaForm
from runs import inbox_pages, recovery, services
from runs.dashboard import dashboard_live
from runs.models import Approval, Event, LogLine, Run, StepRun

LOG_TAIL = 500
"""Log lines rendered with the page; the stream brings the rest."""


def urls(wrap: Any) -> list[Any]:
    return [
        page_path("runs/<uuid:pk>/", run_page, "run-page", wrap),
        page_path("runs/<uuid:pk>/live/", run_live, "run-live", wrap),
        page_path("runs/<uuid:pk>/steps/<str:step>/", step_detail, "run-step", wrap),
        page_path("runs/<uuid:pk>/do/<str:action>/", run_action, "run-action", wrap),
        page_path("runs/<uuid:pk>/decide/<str:step>/", decide, "run-decide", wrap),
        page_path("dashboard/live/", dashboard_live, "dashboard-live", wrap),
        page_path("approvals/", inbox_pages.approvals_inbox, "approvals-inbox", wrap),
        page_path("dead-letters/", inbox_pages.dead_letters_page, "dead-letters-page", wrap),
        page_path(
            "dead-letters/<int:pk>/<str:action>/",
            inbox_pages.dead_letter_action,
            "dead-letter-action",
            wrap,
        ),
    ]


def _run_for(request: HttpRequest, pk: Any) -> Run:
    """The run, if the user may see it (a run they may not see does not exist for them)."""
    run = (
        Run.objects.select_related("workflow", "version", "version__workflow").filter(pk=pk).first()
    )
    if run is None or not access.allowed(request.user, "view", run.workflow_id):
        raise Http404("no such run")
    return run


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def duration_label(seconds: float | None) -> str:
    """1.2 s, 3 min 4 s, 2 h 5 min: short and exact enough to compare steps at a glance."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _live_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    """The parts that change while the run goes: status, graph, steps, approvals, actions."""
    now = timezone.now()
    steps = list(
        StepRun.objects.filter(run=run, item_of__isnull=True)
        .order_by("position")
        .only(
            "id",
            "name",
            "type",
            "status",
            "attempt",
            "worker",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "position",
            "error",
        )
    )
    begin = run.started_at or run.created_at
    end = run.finished_at or now
    span = max((end - begin).total_seconds(), 0.001)
    # One reverse for every step: 500 of them would otherwise spend half the page's budget.
    step_url = reverse("admin:run-step", args=[run.pk, "-"])[:-2]
    links = {step.name: f"{step_url}{quote(step.name, safe='')}/" for step in steps}
    rows = []
    for step in steps:
        started = step.started_at
        finished = step.finished_at or (now if started else None)
        left = ((started - begin).total_seconds() / span * 100) if started else 0.0
        width = ((finished - started).total_seconds() / span * 100) if started and finished else 0.0
        rows.append(
            {
                "step": step,
                "url": links[step.name],
                "duration": duration_label(
                    _seconds(started, step.finished_at or (now if started else None))
                ),
                "bar_left": f"{min(max(left, 0.0), 100.0):.2f}",
                "bar_width": f"{min(max(width, 0.4), 100.0):.2f}",
            }
        )
    statuses = {step.name: step.status for step in steps}
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    user = request.user
    may_run = access.allowed(user, "run", run.workflow_id)
    pending = [
        (
            approval,
            SchemaForm(approval.form, prefix=f"approval-{approval.pk}") if approval.form else None,
        )
        for approval in Approval.objects.filter(run=run, status="pending").select_related(
            "step_run"
        )
        if services.can_decide(user, approval.approvers, run.workflow_id)
    ]
    final = run.status in {"succeeded", "failed", "cancelled"}
    return {
        "run": run,
        "rows": rows,
        "counts": sorted(counts.items()),
        "graph": graph_svg(
            run.version,
            statuses=statuses,
            links=links,
        ),
        "duration": duration_label(_seconds(begin, end)),
        "final": final,
        "may_run": may_run,
        "can_cancel": may_run and not final,
        "can_pause": may_run and run.status in {"running", "queued"},
        "can_resume": may_run and run.status == "paused",
        "can_rerun": may_run and run.status in {"failed", "cancelled"},
        "pending": pending,
    }


@require_GET
def run_page(request: HttpRequest, pk: Any) -> HttpResponse:
    # The stream starts after the last event read *before* the state: a change committed while
    # the page reads is then sent again (one redraw too many) instead of missed until the next.
    last_event = (
        Event.objects.filter(run_id=pk).order_by("-id").values_list("id", flat=True).first()
    )
    run = _run_for(request, pk)
    context = _live_context(request, run)
    tail = list(
        LogLine.objects.filter(run=run)
        .order_by("-id")
        .values("id", "stream", "text", "attempt", "step_run__name")[:LOG_TAIL]
    )
    tail.reverse()
    context.update(
        title=f"Run {str(run.pk)[:8]} of {run.workflow.name}",
        log_lines=tail,
        log_after=tail[-1]["id"] if tail else 0,
        step_names=[row["step"].name for row in context["rows"]],
        last_event=last_event or 0,
    )
    return render_page(request, "furrow/run.html", context)


@require_GET
def run_live(request: HttpRequest, pk: Any) -> HttpResponse:
    run = _run_for(request, pk)
    return TemplateResponse(request, "furrow/run.html#live", _live_context(request, run))


@require_GET
def step_detail(request: HttpRequest, pk: Any, step: str) -> HttpResponse:
    run = _run_for(request, pk)
    step_run = StepRun.objects.filter(run=run, name=step, item_of__isnull=True).first()
    if step_run is None:
        raise Http404("no such step")
    items = list(
        StepRun.objects.filter(item_of=step_run)
        .order_by("item_index")
        .values("item_index", "status", "attempt", "error")[:200]
    )
    final = run.status in {"succeeded", "failed", "cancelled"}
    may_rerun = final and access.allowed(request.user, "run", run.workflow_id)
    context = {"run": run, "step": step_run, "items": items, "may_rerun": may_rerun}
    if request.htmx:
        return TemplateResponse(request, "furrow/run.html#step-detail", context)
    return render_page(
        request, "furrow/step.html", {**context, "title": f"{step} in run {str(run.pk)[:8]}"}
    )


ACTIONS = {"cancel", "pause", "resume", "rerun"}


@require_POST
def run_action(request: HttpRequest, pk: Any, action: str) -> HttpResponse:
    """Cancel, pause, resume or rerun: the same services the API and the admin call."""
    run = _run_for(request, pk)
    if action not in ACTIONS:
        raise Http404("no such action")
    user = request.user
    if not access.allowed(user, "run", run.workflow_id):
        messages.error(request, "You may not control runs of this workflow.")
        return redirect("admin:run-page", pk=run.pk)
    actor = f"user:{user.get_username()}"
    target = run
    try:
        if action == "cancel":
            services.cancel_run(run, actor=actor, reason=request.POST.get("reason", ""))
        elif action == "pause":
            services.pause_run(run, actor=actor)
        elif action == "resume":
            services.resume_run(run, actor=actor)
        else:
            from_step = request.POST.get("from_step") or None
            target = recovery.rerun(run, from_step=from_step, user=user, actor=actor)
    except services.InvalidTransition as exc:
        messages.error(request, str(exc))
    else:
        done = {"cancel": "cancelled", "pause": "paused", "resume": "resumed", "rerun": "rerun"}
        messages.success(request, f"Run {str(run.pk)[:8]} {done[action]}.")
    return redirect(reverse("admin:run-page", args=[target.pk]))


@require_POST
def decide(request: HttpRequest, pk: Any, step: str) -> HttpResponse:
    """Approve or reject a pending approval, with its form's answers when it has one."""
    run = _run_for(request, pk)
    decision = request.POST.get("decision")
    if decision not in {"approve", "reject"}:
        messages.error(request, "Choose approve or reject.")
        return _back(request, run)
    approval = Approval.objects.filter(run=run, step_run__name=step, status="pending").first()
    data: Any = None
    if approval is not None and approval.form and decision == "approve":
        form = SchemaForm(approval.form, request.POST, prefix=f"approval-{approval.pk}")
        if not form.is_valid():
            for error in form.error_list():
                messages.error(request, error)
            return _back(request, run)
        data = form.value()
    try:
        services.decide(
            run,
            step,
            decision,
            user=request.user,
            comment=request.POST.get("comment", ""),
            data=data,
        )
    except (services.InvalidTransition, services.NotAnApprover, services.ApprovalDataError) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{step}: {decision}d.")
    return _back(request, run)


def _back(request: HttpRequest, run: Run) -> HttpResponse:
    """To the form's `next` page (the approvals inbox) when it is one of ours, else the run."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect("admin:run-page", pk=run.pk)
