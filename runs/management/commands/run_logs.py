"""Print a run's log lines, optionally following them until the run ends."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet

from runs.engine.states import RunStatus
from runs.management.commands.show_run import get_run
from runs.models import LogLine, Run

PAGE = 1000
"""Lines fetched per query: memory stays bounded however long the log is."""
POLL_SECONDS = 0.2


def format_line(step: str | None, stream: str, text: str) -> str:
    """`[step] text` for stdout; other streams are marked: `[step:stderr] text`."""
    label = step or "-"
    if stream != "stdout":
        label += f":{stream}"
    return f"[{label}] {text}"


class Command(BaseCommand):
    help = (
        "Print a run's log lines in order, one per line as `[step] text`. Lines a step wrote to "
        "stderr are marked `[step:stderr] text`, and Furrow's own notes `[step:system] text`; "
        "all go to standard output so that their order is kept. With --follow, keep printing "
        "new lines until the run has ended."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="ID", help="The run's id.")
        parser.add_argument("--step", metavar="NAME", help="Only this step's lines.")
        parser.add_argument(
            "--follow", action="store_true", help="Wait for new lines until the run ends."
        )
        parser.add_argument(
            "--after",
            type=int,
            default=0,
            metavar="ID",
            help="Start after this log line id (to continue an earlier listing).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        if options["after"] < 0:
            raise CommandError("--after must not be negative")
        lines = LogLine.objects.filter(run=run)
        step = options["step"]
        if step:
            if not run.steps.filter(name=step).exists():
                raise CommandError(f"run {run.pk} has no step '{step}'")
            lines = lines.filter(step_run__name=step)
        self.print_lines(run, lines, options["after"], follow=options["follow"])

    def print_lines(self, run: Run, lines: QuerySet[LogLine], after: int, *, follow: bool) -> None:
        """Print pages from the `after` cursor; with `follow`, until the run is final and drained.

        The run's status is read before each page: lines are written before a step finishes, so
        a page fetched after the run was seen final holds the last of them.
        """
        while True:
            final = not follow or self.is_final(run)
            after, count = self.print_page(lines, after)
            if count == PAGE:
                continue
            if final:
                return
            time.sleep(POLL_SECONDS)

    def print_page(self, lines: QuerySet[LogLine], after: int) -> tuple[int, int]:
        """Print up to PAGE lines after the cursor; returns the new cursor and how many."""
        page = (
            lines.filter(id__gt=after)
            .order_by("id")
            .values_list("id", "step_run__name", "stream", "text")[:PAGE]
        )
        count = 0
        for line_id, step, stream, text in page:
            self.stdout.write(format_line(step, stream, text))
            after, count = line_id, count + 1
        return after, count

    def is_final(self, run: Run) -> bool:
        status = Run.objects.values_list("status", flat=True).get(pk=run.pk)
        return RunStatus(status).is_final
