"""Approve or reject a step's pending approval from the shell, as a named user."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from flows.language.errors import DefinitionError
from flows.language.parse import load_document
from runs import services
from runs.management.commands.show_run import get_run
from runs.models import StepRun


def get_user(username: str) -> Any:
    """The user called `username`; CommandError when there is none."""
    user_model = get_user_model()
    user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    if user is None:
        raise CommandError(f"no user named '{username}'")
    return user


def read_data(raw: str | None) -> Any:
    """The answers to the approval's form from --data (JSON); None when not given."""
    if raw is None:
        return None
    try:
        return load_document(raw, fmt="json")
    except DefinitionError as exc:
        raise CommandError(f"--data: {exc}") from None


class Command(BaseCommand):
    help = (
        "Decide the pending approval of a run's step (an approval step, or the gate of a step "
        "with requires_approval) as the user given by --as, who must be one of its approvers. "
        "Approves unless --reject; --data gives the answers to the approval's form as JSON."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="RUN_ID", help="The run's id.")
        parser.add_argument("step", metavar="STEP", help="The step's name.")
        parser.add_argument(
            "--as",
            dest="username",
            required=True,
            metavar="USERNAME",
            help="Who decides (the event and the step's output name them).",
        )
        parser.add_argument("--reject", action="store_true", help="Reject instead of approve.")
        parser.add_argument("--comment", default="", metavar="TEXT", help="Why, for the record.")
        parser.add_argument(
            "--data", metavar="JSON", help="The answers to the form, a JSON object."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = get_run(options["id"])
        user = get_user(options["username"])
        step, decision = options["step"], "reject" if options["reject"] else "approve"
        try:
            services.decide(
                run,
                step,
                decision,
                user=user,
                comment=options["comment"],
                data=read_data(options["data"]),
            )
        except services.ApprovalDataError as exc:
            problems = "\n".join(f"  {problem}" for problem in exc.problems)
            raise CommandError(
                f"the data does not fit the form of step '{step}':\n{problems}"
            ) from None
        except services.NotAnApprover:
            raise CommandError(
                f"'{user.get_username()}' is not one of the approvers of step '{step}'"
            ) from None
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None
        # Say where the decision led: an approval step ends, an approved gate lets its step run.
        now = StepRun.objects.filter(run=run, name=step).values_list("status", flat=True).first()
        verb = "rejected" if options["reject"] else "approved"
        self.stdout.write(f"{verb} step '{step}' of run {run.pk}; the step is now {now}")
