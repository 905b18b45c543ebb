"""Rerun an ended run as a new run that keeps what succeeded."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.language.inputs import InputError
from runs import recovery, services
from runs.management.commands.pause_run import acting_user, add_as_argument
from runs.management.commands.show_run import get_run
from runs.management.commands.start_run import read_input
from runs.models import Run


class Command(BaseCommand):
    help = (
        "Rerun an ended run and print the new run's id (its rerun_of is the old run, which is "
        "left as it was). By default the failed, cancelled and skipped steps run again and the "
        "succeeded ones keep their output; --from-step S runs S and everything after it again; "
        "--only-step S replays S alone. --input replaces the run input."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="RUN_ID", help="The ended run's id.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--from-step", metavar="STEP", help="Run this step and everything after it again."
        )
        mode.add_argument("--only-step", metavar="STEP", help="Replay this step alone.")
        parser.add_argument("--input", metavar="JSON", help="A new run input, a JSON object.")
        add_as_argument(parser, "reruns")

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        user, actor = acting_user(options["username"], "run", run.workflow_id)
        new = self.rerun(run, options, user, actor)
        self.stdout.write(str(new.pk))

    def rerun(self, run: Run, options: dict[str, Any], user: Any, actor: str) -> Run:
        try:
            return recovery.rerun(
                run,
                from_step=options["from_step"],
                only_step=options["only_step"],
                input=read_input(options["input"], None),
                user=user,
                actor=actor,
            )
        except InputError as exc:
            problems = "\n".join(f"  {problem}" for problem in exc.problems)
            raise CommandError(
                f"the input does not fit the input schema of '{run.workflow.name}':\n{problems}"
            ) from None
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None
