"""List dead letters: the open ones waiting for a person, or every one with --all."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from rest_framework.utils.encoders import JSONEncoder

from runs.management.commands.approvals import first_line
from runs.management.commands.show_run import format_time
from runs.models import DeadLetter
from runs.serializers import DeadLetterSerializer


class Command(BaseCommand):
    help = (
        "List open dead letters (every one with --all), newest first: id, run, workflow, step, "
        "attempts, the first line of the error and when. Inspect one with "
        "`manage.py dead_letter ID`, then --requeue or --discard it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--all", action="store_true", help="Requeued and discarded ones too.")
        parser.add_argument(
            "--json", action="store_true", help="Print the API's dead letter JSON instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        letters = DeadLetter.objects.select_related("run__workflow", "step_run", "resolved_by")
        if not options["all"]:
            letters = letters.filter(status="open")
        found = list(letters)
        if options["json"]:
            data = DeadLetterSerializer(found, many=True).data
            self.stdout.write(json.dumps(data, cls=JSONEncoder, ensure_ascii=False, indent=2))
        elif not found:
            self.stdout.write("no dead letters" if options["all"] else "no open dead letters")
        else:
            self.write_table(found, with_status=options["all"])

    def write_table(self, letters: list[DeadLetter], *, with_status: bool) -> None:
        header = ["ID", "RUN", "WORKFLOW", "STEP", "ATTEMPTS", "ERROR", "CREATED"]
        rows = [header + (["STATUS"] if with_status else [])]
        for letter in letters:
            row = [
                str(letter.pk),
                str(letter.run_id),
                letter.run.workflow.name,
                letter.step_run.name,
                str(letter.attempts),
                first_line(letter.error) or "-",
                format_time(letter.created_at),
            ]
            rows.append(row + ([resolution(letter)] if with_status else []))
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            self.stdout.write("  ".join(cells).rstrip())


def resolution(letter: DeadLetter) -> str:
    """`open`, or what became of it: `requeued by alice`, `discarded` (by the cli)."""
    if letter.resolved_by is None:
        return letter.status
    return f"{letter.status} by {letter.resolved_by.get_username()}"
