"""List the approvals people owe: the pending inbox, or every approval with --all."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import QuerySet
from rest_framework.utils.encoders import JSONEncoder

from runs.management.commands.show_run import format_time, get_run
from runs.models import Approval
from runs.serializers import ApprovalSerializer

MESSAGE_WIDTH = 60
"""A long message is cut in the table; --json has it whole."""


def describe_approvers(approvers: Mapping[str, Any]) -> str:
    """`users: bob; groups: ops` — or who decides when nobody is named (see services.can_decide)."""
    named = [
        f"{key}: {', '.join(map(str, approvers[key]))}"
        for key in ("users", "groups", "permissions")
        if approvers.get(key)
    ]
    return "; ".join(named) or "staff and runs.decide_approval holders"


def first_line(text: str, width: int = MESSAGE_WIDTH) -> str:
    line = (text.splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 1] + "…"


class Command(BaseCommand):
    help = (
        "List pending approvals (every approval with --all), newest first: run, workflow, step, "
        "kind, message, approvers and when the default decision applies. Decide one with "
        "`manage.py approve RUN_ID STEP --as USERNAME`."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--all", action="store_true", help="Decided, expired and dropped ones too."
        )
        parser.add_argument("--run", metavar="ID", help="Only this run's approvals.")
        parser.add_argument(
            "--json", action="store_true", help="Print the API's approval JSON instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        approvals = self.approvals(options["run"], every=options["all"])
        if options["json"]:
            data = ApprovalSerializer(approvals, many=True).data
            self.stdout.write(json.dumps(data, cls=JSONEncoder, ensure_ascii=False, indent=2))
        elif not approvals:
            self.stdout.write("no approvals" if options["all"] else "no pending approvals")
        else:
            self.write_table(approvals, with_status=options["all"])

    def approvals(self, run_id: str | None, *, every: bool) -> list[Approval]:
        approvals: QuerySet[Approval] = Approval.objects.select_related(
            "run__workflow", "step_run", "decided_by"
        )
        if not every:
            approvals = approvals.filter(status="pending")
        if run_id is not None:
            approvals = approvals.filter(run=get_run(run_id))
        return list(approvals)

    def write_table(self, approvals: list[Approval], *, with_status: bool) -> None:
        header = ["RUN", "WORKFLOW", "STEP", "KIND", "MESSAGE", "APPROVERS", "EXPIRES"]
        rows = [header + (["STATUS"] if with_status else [])]
        for approval in approvals:
            expires = format_time(approval.expires_at) if approval.expires_at else "never"
            row = [
                str(approval.run_id),
                approval.run.workflow.name,
                approval.step_run.name,
                approval.kind,
                first_line(approval.message) or "-",
                describe_approvers(approval.approvers),
                expires,
            ]
            rows.append(row + ([self.status(approval)] if with_status else []))
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            self.stdout.write("  ".join(cells).rstrip())

    def status(self, approval: Approval) -> str:
        """`pending`, or the outcome: `decided: approve by bob`, `expired: reject`."""
        if approval.status == "pending" or not approval.decision:
            return approval.status
        by = f" by {approval.decided_by.get_username()}" if approval.decided_by else ""
        return f"{approval.status}: {approval.decision}{by}"
