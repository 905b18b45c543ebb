"""Pages under the admin for what waits for a person: the approvals inbox and the dead letters.

Deciding goes through the run page's `run-decide` view (its `next` field brings the user back
here); requeue and discard call runs.recovery, as the admin's actions and the API do.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from flows import access
from orchestrator.admin_site import render_page
from orchestrator.schema_form import SchemaForm
from runs import recovery, services
from runs.dashboard import decidable_pending, first_line
from runs.models import Approval, DeadLetter

LIMIT = 100
RECENT = 20


@require_GET
def approvals_inbox(request: HttpRequest) -> HttpResponse:
    """Pending approvals the user may decide, oldest first, each with its form; then the ones
    decided lately in the workflows they may view."""
    user = request.user
    pending = list(
        decidable_pending(user)
        .select_related("run__workflow", "step_run")
        .order_by("created_at")[:LIMIT]
    )
    rows = [
        {
            "approval": approval,
            "form": SchemaForm(approval.form, prefix=f"approval-{approval.pk}")
            if approval.form
            else None,
        }
        for approval in pending
    ]
    decided = (
        access.visible(Approval.objects.exclude(status="pending"), user, "run__workflow_id")
        .select_related("run__workflow", "step_run", "decided_by")
        .order_by("-created_at")[:RECENT]
    )
    context = {
        "title": "Approvals",
        "rows": rows,
        "decided": list(decided),
        "next": reverse("admin:approvals-inbox"),
    }
    return render_page(request, "furrow/approvals.html", context)


@require_GET
def dead_letters_page(request: HttpRequest) -> HttpResponse:
    """Open dead letters of the workflows the user may view; the buttons only where they may run."""
    user = request.user
    visible = access.visible(DeadLetter.objects.all(), user, "run__workflow_id")
    related = ("run__workflow", "step_run", "resolved_by")
    runnable = access.workflow_ids(user, "run")
    rows = [
        {
            "letter": letter,
            "error": first_line(letter.error),
            "may_run": runnable is access.EVERY or letter.run.workflow_id in runnable,
        }
        for letter in visible.filter(status="open")
        .select_related(*related)
        .order_by("-created_at")[:LIMIT]
    ]
    resolved = visible.exclude(status="open").select_related(*related).order_by("-resolved_at")
    context = {"title": "Dead letters", "rows": rows, "resolved": list(resolved[:RECENT])}
    return render_page(request, "furrow/dead_letters.html", context)


DEAD_LETTER_ACTIONS = {
    "requeue": (recovery.requeue_dead_letter, "requeued; the step runs again"),
    "discard": (recovery.discard_dead_letter, "discarded"),
}


@require_POST
def dead_letter_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Requeue or discard one dead letter: 404 unless the user may view its workflow, 403 unless
    they may run it; a letter someone else resolved first is reported, not changed."""
    user = request.user
    letter = (
        access.visible(DeadLetter.objects.all(), user, "run__workflow_id")
        .select_related("run__workflow", "step_run")
        .filter(pk=pk)
        .first()
    )
    if letter is None or action not in DEAD_LETTER_ACTIONS:
        raise Http404("no such dead letter")
    if not access.allowed(user, "run", letter.run.workflow_id):
        raise PermissionDenied("you may not run this workflow")
    change, done = DEAD_LETTER_ACTIONS[action]
    label = f"{letter.run.workflow.name} step '{letter.step_run.name}'"
    try:
        change(letter, user=user, actor=f"user:{user.get_username()}")
    except services.InvalidTransition as exc:
        messages.error(request, f"{label}: {exc}")
    else:
        messages.success(request, f"{label}: {done}.")
    return redirect("admin:dead-letters-page")
