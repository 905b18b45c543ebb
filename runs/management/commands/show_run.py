"""Show one run and its steps, as text or as the API's JSON."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from runs.api import run_detail_queryset
from runs.models import Run, StepRun
from runs.serializers import RunDetailSerializer


def get_run(raw_id: str, runs: QuerySet[Run] | None = None) -> Run:
    """The run with id `raw_id`; CommandError when it is not a run id or there is no such run."""
    try:
        pk = uuid.UUID(raw_id)
    except ValueError:
        raise CommandError(f"'{raw_id}' is not a run id (a UUID)") from None
    run = (runs if runs is not None else Run.objects.all()).filter(pk=pk).first()
    if run is None:
        raise CommandError(f"no run with id {pk}")
    return run


def format_time(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def format_duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class Command(BaseCommand):
    help = "Show a run: its status, times, input, output, error and a table of its steps."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="ID", help="The run's id.")
        parser.add_argument(
            "--json", action="store_true", help="Print the API's run detail JSON instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"], run_detail_queryset())
        if options["json"]:
            data = RunDetailSerializer(run).data
            self.stdout.write(json.dumps(data, cls=JSONEncoder, ensure_ascii=False, indent=2))
            return
        self.write_summary(run)
        self.stdout.write("")
        self.write_steps(list(run.steps.all()))

    def write_summary(self, run: Run) -> None:
        fields = [
            ("run", str(run.pk)),
            ("workflow", run.workflow.name),
            ("version", f"v{run.version.number}"),
            ("status", run.status),
            ("source", run.source),
            ("created", format_time(run.created_at)),
            ("started", format_time(run.started_at)),
            ("finished", format_time(run.finished_at)),
            ("duration", format_duration(run.started_at, run.finished_at)),
            ("input", to_json(run.input)),
            ("output", to_json(run.output)),
            ("error", run.error or "-"),
        ]
        for label, value in fields:
            self.stdout.write(f"{label:<9} {value}")

    def write_steps(self, steps: list[StepRun]) -> None:
        header = ("STEP", "TYPE", "STATUS", "ATTEMPT", "DURATION", "ERROR")
        rows = [header] + [
            (
                step.name,
                step.type,
                step.status,
                str(step.attempt),
                format_duration(step.started_at, step.finished_at),
                (step.error.splitlines() or [""])[0],
            )
            for step in steps
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
