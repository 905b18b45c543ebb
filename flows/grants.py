"""Granting and revoking what users and groups may do with a workflow; every change is an event."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from flows.models import Workflow, WorkflowGrant
from runs.models import Event


class GrantError(ValueError):
    pass


def grant(
    workflow: Workflow, role: str, *, user: Any = None, group: Group | None = None, actor: str
) -> WorkflowGrant:
    """Let `user` or `group` (exactly one) `role` the workflow. Granting what is already granted
    returns the existing grant."""
    if (user is None) == (group is None):
        raise GrantError("grant to exactly one of a user or a group")
    if role not in WorkflowGrant.Role.values:
        raise GrantError(f"role must be one of {', '.join(WorkflowGrant.Role.values)}")
    existing = WorkflowGrant.objects.filter(workflow=workflow, user=user, group=group, role=role)
    if existing.exists():
        return existing.get()
    try:
        with transaction.atomic():
            made = WorkflowGrant.objects.create(
                workflow=workflow, user=user, group=group, role=role
            )
            _audit(made, "grant.added", actor)
    except IntegrityError:  # the same grant, made at the same moment
        return existing.get()
    return made


def revoke(grant_row: WorkflowGrant, *, actor: str) -> None:
    with transaction.atomic():
        _audit(grant_row, "grant.removed", actor)
        grant_row.delete()


def _audit(row: WorkflowGrant, type_: str, actor: str) -> None:
    Event.objects.create(workflow_id=row.workflow_id, type=type_, actor=actor, data=describe(row))


def describe(row: WorkflowGrant) -> dict[str, Any]:
    return {
        "role": row.role,
        "user": row.user.get_username() if row.user_id else None,
        "group": row.group.name if row.group_id else None,
    }
