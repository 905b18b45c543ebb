"""The access policy (flows/access.py) in DRF: one permission class and one filter backend, set
as the defaults in settings, so every view is covered without each one repeating the rules.

The permission class finds the workflow a request is about from its URL (the route's name and
its `name` or `pk`) and asks for the action the route and method need. The filter backend narrows
every list, and every detail view's lookup, to the workflows the user may view.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.filters import BaseFilterBackend
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from flows import access
from flows.models import Trigger, Workflow, WorkflowGrant, WorkflowVersion
from runs.models import Approval, DeadLetter, Event, LogLine, Run, StepRun

# Route name -> (what its URL names: workflow, run, dead letter or trigger; action by method).
ROUTES: dict[str, tuple[str, dict[str, str]]] = {
    "workflow-detail": ("workflow", {"GET": "view", "PUT": "edit"}),
    "version-list": ("workflow", {"GET": "view"}),
    "version-detail": ("workflow", {"GET": "view"}),
    "version-diff": ("workflow", {"GET": "view"}),
    "workflow-rollback": ("workflow", {"POST": "edit"}),
    "workflow-runs": ("workflow", {"GET": "view", "POST": "run"}),
    "workflow-pause": ("workflow", {"POST": "edit"}),
    "workflow-resume": ("workflow", {"POST": "edit"}),
    "workflow-audit": ("workflow", {"GET": "view"}),
    "workflow-triggers": ("workflow", {"GET": "view", "POST": "edit"}),
    "workflow-grants": ("workflow", {"GET": "view", "POST": "edit"}),
    "workflow-grant-detail": ("workflow", {"DELETE": "edit"}),
    "run-detail": ("run", {"GET": "view"}),
    "run-events": ("run", {"GET": "view"}),
    "run-logs": ("run", {"GET": "view", "POST": "run"}),
    "run-cancel": ("run", {"POST": "run"}),
    "run-pause": ("run", {"POST": "run"}),
    "run-resume": ("run", {"POST": "run"}),
    "run-rerun": ("run", {"POST": "run"}),
    "dead-letter-detail": ("dead-letter", {"GET": "view"}),
    "dead-letter-requeue": ("dead-letter", {"POST": "run"}),
    "dead-letter-discard": ("dead-letter", {"POST": "run"}),
    "trigger-detail": (
        "trigger",
        {"GET": "view", "PUT": "edit", "PATCH": "edit", "DELETE": "edit"},
    ),
    "trigger-enable": ("trigger", {"POST": "edit"}),
    "trigger-disable": ("trigger", {"POST": "edit"}),
}

# Model -> the path from it to its workflow's id, for narrowing querysets.
WORKFLOW_PATHS: dict[type, str] = {
    Workflow: "id",
    WorkflowVersion: "workflow_id",
    WorkflowGrant: "workflow_id",
    Trigger: "workflow_id",
    Run: "workflow_id",
    StepRun: "run__workflow_id",
    Approval: "run__workflow_id",
    DeadLetter: "run__workflow_id",
    LogLine: "run__workflow_id",
}


def narrow(queryset: QuerySet, user: Any, action: str = "view") -> QuerySet:
    """`queryset` with only the rows of workflows `user` may `action` (other models as is)."""
    model = queryset.model
    if model is Event and action == "view":
        return access.visible_events(queryset, user)
    path = WORKFLOW_PATHS.get(model)
    return queryset if path is None else access.visible(queryset, user, path, action)


def workflow_of(kind: str, kwargs: dict[str, Any]) -> int | None:
    """The id of the workflow a URL names, or None when it names nothing that exists."""
    if kind == "workflow":
        rows = Workflow.objects.filter(name=kwargs.get("name"))
        return rows.values_list("id", flat=True).first()
    if kind == "run":
        return Run.objects.filter(pk=kwargs.get("pk")).values_list("workflow_id", flat=True).first()
    if kind == "dead-letter":
        rows = DeadLetter.objects.filter(pk=kwargs.get("pk"))
        return rows.values_list("run__workflow_id", flat=True).first()
    rows = Trigger.objects.filter(pk=kwargs.get("pk"))
    return rows.values_list("workflow_id", flat=True).first()


class WorkflowPermission(BasePermission):
    """Authenticated, and allowed the action the route needs on the workflow it names."""

    message = "you may not do this with this workflow"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        match = request.resolver_match
        route = ROUTES.get(match.url_name if match else "")
        if route is not None:
            creates = (
                match.url_name == "workflow-detail"
                and request.method == "PUT"
                and not Workflow.objects.filter(name=view.kwargs.get("name")).exists()
            )
            if creates:
                return self._creating(user, "workflow-list", request)
            return self._on_workflow(user, request.method or "GET", route, view.kwargs)
        if (
            match
            and match.url_name in ("workflow-list", "trigger-list")
            and request.method == "POST"
        ):
            return self._creating(user, match.url_name, request)
        # Lists: the filter backend narrows them. Deciding an approval is the approval's own rule
        # (runs.services.can_decide): a named approver need hold no grant.
        return True

    def _on_workflow(
        self, user: Any, method: str, route: tuple[str, dict[str, str]], kwargs: dict[str, Any]
    ) -> bool:
        kind, actions = route
        action = actions.get(method, "view")
        if access.workflow_ids(user, action) is access.EVERY:
            return True  # no lookup: whatever it names, this user may (view is implied)
        workflow_id = workflow_of(kind, kwargs)
        if workflow_id is None:
            return True  # the view answers 404 in its own words
        if not access.allowed(user, "view", workflow_id):
            raise NotFound(f"no {kind.replace('-', ' ')} here")  # not even whether it exists
        return access.allowed(user, action, workflow_id)

    def _creating(self, user: Any, route: str, request: Request) -> bool:
        if route == "workflow-list":
            # A new workflow is nobody's yet: creating one is the global right to add.
            return user.is_superuser or user.has_perm("flows.add_workflow")
        name = request.data.get("workflow") if isinstance(request.data, dict) else None
        workflow_id = Workflow.objects.filter(name=name).values_list("id", flat=True).first()
        return workflow_id is None or access.allowed(user, "edit", workflow_id)


class VisibleWorkflowsFilter(BaseFilterBackend):
    """Narrows any queryset of workflow-scoped rows to those the user may view."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        return narrow(queryset, request.user)
