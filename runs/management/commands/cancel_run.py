"""Cancel a run that has not ended, with its waiting steps and child runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs import services
from runs.management.commands.pause_run import acting_user
from runs.management.commands.show_run import get_run


class Command(BaseCommand):
    help = (
        "Cancel a run that has not ended: its unfinished steps, pending approvals and child runs. "
        "Running attempts are fenced out (their results are ignored). Exits 1 if the run had "
        "already ended."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="RUN_ID", help="The run's id.")
        parser.add_argument("--reason", default="", metavar="TEXT", help="Kept as the run's error.")
        parser.add_argument(
            "--as",
            dest="username",
            metavar="USERNAME",
            help="Who cancels, for the event log (default: cli).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        _, actor = acting_user(options["username"], "run", run.workflow_id)
        try:
            services.cancel_run(run, actor=actor, reason=options["reason"])
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {run.pk} cancelled")
