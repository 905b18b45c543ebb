"""Resume a paused run: what the pause held back starts."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs import services
from runs.management.commands.pause_run import acting_user, add_as_argument
from runs.management.commands.show_run import get_run


class Command(BaseCommand):
    help = (
        "Resume a paused run: its ready steps are sent to the workers again and the run is "
        "planned anew. Exits 1 unless the run is paused."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="RUN_ID", help="The run's id.")
        add_as_argument(parser, "resumes")

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        _, actor = acting_user(options["username"], "run", run.workflow_id)
        try:
            services.resume_run(run, actor=actor)
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {run.pk} resumed")
