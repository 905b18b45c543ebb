"""Pause a running run: nothing new starts, the steps already running finish."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows import access
from runs import services
from runs.management.commands.approve import get_user
from runs.management.commands.show_run import get_run


def acting_user(
    username: str | None, action: str | None = None, workflow_id: int | None = None
) -> tuple[Any, str]:
    """The user given by --as and the actor the events name; (None, "cli") without --as.

    With --as, the command acts as that user, under the same rules as the API (flows/access.py):
    CommandError unless they may `action` the workflow. Without it, whoever has a shell on the
    server is trusted, as they could edit the database anyway.
    """
    if username is None:
        return None, "cli"
    user = get_user(username)
    if action is not None and not access.allowed(user, action, workflow_id):
        raise CommandError(f"user '{user.get_username()}' may not {action} this workflow")
    return user, f"user:{user.get_username()}"


def add_as_argument(parser: Any, what: str) -> None:
    parser.add_argument(
        "--as",
        dest="username",
        metavar="USERNAME",
        help=f"Who {what}, for the event log (default: cli).",
    )


class Command(BaseCommand):
    help = (
        "Pause a running run: ready steps are held back and nothing new starts; steps already "
        "running finish. `manage.py resume_run ID` goes on. Exits 1 unless the run is running."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="RUN_ID", help="The run's id.")
        add_as_argument(parser, "pauses")

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        _, actor = acting_user(options["username"], "run", run.workflow_id)
        try:
            services.pause_run(run, actor=actor)
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {run.pk} paused")
