"""Query parameters of the run, approval and dead-letter lists (runs/api.py), as django-filter
FilterSets: a value a filter cannot take is a 400 naming the parameter, and the OpenAPI schema
describes each one."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from orchestrator.schema import run_status_choices
from runs import services
from runs.models import Approval, DeadLetter, Run


def _one_of(values: list[str]) -> dict[str, str]:
    return {"invalid_choice": f"must be one of {', '.join(values)}"}


def _choices(values: list[str]) -> list[tuple[str, str]]:
    return [(value, value) for value in values]


def _status(values: list[str]) -> django_filters.ChoiceFilter:
    return django_filters.ChoiceFilter(choices=_choices(values), error_messages=_one_of(values))


def _workflow() -> django_filters.CharFilter:
    return django_filters.CharFilter(
        field_name="run__workflow__name", help_text="A workflow's name."
    )


def _run() -> django_filters.UUIDFilter:
    return django_filters.UUIDFilter(
        field_name="run_id", help_text="A run's id.", error_messages={"invalid": "must be a run id"}
    )


RUN_STATUSES = [value for value, _ in run_status_choices()]


class WorkflowRunFilter(django_filters.FilterSet):
    """`GET /api/v1/workflows/{name}/runs`."""

    status = _status(RUN_STATUSES)

    class Meta:
        model = Run
        fields: list[str] = []


class RunFilter(WorkflowRunFilter):
    """`GET /api/v1/runs`."""

    workflow = django_filters.CharFilter(
        field_name="workflow__name", help_text="A workflow's name."
    )


APPROVAL_STATUSES = ["decided", "dropped", "expired", "pending"]
MINE = ["1", "true", "0", "false"]


class ApprovalFilter(django_filters.FilterSet):
    status = _status(APPROVAL_STATUSES)
    run = _run()
    workflow = _workflow()
    mine = django_filters.ChoiceFilter(
        choices=_choices(MINE),
        error_messages=_one_of(MINE),
        method="filter_mine",
        help_text="`1` or `true`: only those the caller may decide (as a named approver, or "
        "through an `approve` grant when the step names nobody).",
    )

    class Meta:
        model = Approval
        fields: list[str] = []

    def filter_mine(
        self, queryset: QuerySet[Approval], name: str, value: str
    ) -> QuerySet[Approval]:
        if value in ("0", "false"):
            return queryset
        return services.decidable(queryset, self.request.user if self.request else None)


DEAD_LETTER_STATUSES = ["open", "requeued", "discarded"]


class DeadLetterFilter(django_filters.FilterSet):
    status = _status(DEAD_LETTER_STATUSES)
    workflow = _workflow()
    run = _run()

    class Meta:
        model = DeadLetter
        fields: list[str] = []
