"""Who may do what with which workflow: the one policy the API, the streams, the admin and the
commands all ask.

A user may do an action on a workflow when they are a superuser, hold the global permission for
it (every workflow), or hold a grant on that workflow, themselves or through a group. Roles and
permissions include the ones below them:

    action    global permission          grants that allow it
    view      flows.view_workflow (or     view, run, edit, approve
              any permission below)
    run       flows.run_workflow         run, edit
    edit      flows.change_workflow      edit
    approve   runs.decide_approval       approve

A workflow a user may not view does not exist for them (404), so names do not leak; one they may
view but not act on answers 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from flows.models import WorkflowGrant

ACTIONS = ("view", "run", "edit", "approve")

_ROLES = {
    "view": ("view", "run", "edit", "approve"),
    "run": ("run", "edit"),
    "edit": ("edit",),
    "approve": ("approve",),
}
_GLOBAL = {
    # An approver anywhere must see the runs that wait for them.
    "view": (
        "flows.view_workflow",
        "flows.run_workflow",
        "flows.change_workflow",
        "runs.decide_approval",
    ),
    "run": ("flows.run_workflow", "flows.change_workflow"),
    "edit": ("flows.change_workflow",),
    "approve": ("runs.decide_approval",),
}
EVERY = None
"""workflow_ids() for a user who may act on every workflow."""


def workflow_ids(user: Any, action: str) -> frozenset[int] | None:
    """The ids of the workflows `user` may `action`, or EVERY (None). Cached on the user object,
    so one request asks the database once per action."""
    if action not in _ROLES:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cache: dict[str, frozenset[int] | None] = user.__dict__.setdefault("_furrow_access", {})
    if action not in cache:
        cache[action] = _workflow_ids(user, action)
    return cache[action]


def _workflow_ids(user: Any, action: str) -> frozenset[int] | None:
    if user.is_superuser or any(user.has_perm(perm) for perm in _GLOBAL[action]):
        return EVERY
    grants = WorkflowGrant.objects.filter(role__in=_ROLES[action]).filter(
        Q(user=user) | Q(group__in=user.groups.all())
    )
    ids = set(grants.values_list("workflow_id", flat=True))
    if action == "view":
        ids |= _awaiting(user)
    return frozenset(ids)


def _awaiting(user: Any) -> set[int]:
    """Workflows with a pending approval that names `user` (by name, group or permission): an
    approver sees the workflow whose run waits for them."""
    from runs.models import Approval
    from runs.services import can_decide

    pending = Approval.objects.filter(status="pending").exclude(approvers={})
    return {
        workflow_id
        for workflow_id, approvers in pending.values_list("run__workflow_id", "approvers")
        if approvers and can_decide(user, approvers)
    }


def allowed(user: Any, action: str, workflow_id: int | None) -> bool:
    ids = workflow_ids(user, action)
    return ids is EVERY or workflow_id in ids


def forget(user: Any) -> None:
    """Drop the cached answers (after the user's grants changed)."""
    user.__dict__.pop("_furrow_access", None)


def visible(queryset: QuerySet, user: Any, path: str, action: str = "view") -> QuerySet:
    """`queryset` narrowed to rows whose workflow (reached by `path`, e.g. `run__workflow_id`)
    `user` may `action`."""
    ids = workflow_ids(user, action)
    if ids is EVERY:
        return queryset
    return queryset.filter(**{f"{path}__in": ids})


def visible_events(queryset: QuerySet, user: Any) -> QuerySet:
    """Events of workflows and runs `user` may view; events of no workflow (secrets, health
    targets) only for those who may view every workflow."""
    ids = workflow_ids(user, "view")
    if ids is EVERY:
        return queryset
    return queryset.filter(Q(workflow_id__in=ids) | Q(run__workflow_id__in=ids))
