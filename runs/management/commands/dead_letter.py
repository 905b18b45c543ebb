"""Inspect one dead letter, or requeue or discard it."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs import recovery, services
from runs.management.commands.dead_letters import resolution
from runs.management.commands.pause_run import acting_user, add_as_argument
from runs.management.commands.show_run import format_time
from runs.models import DeadLetter


def get_dead_letter(raw_id: str) -> DeadLetter:
    """The dead letter with id `raw_id`; CommandError when it is not a number or there is none."""
    try:
        pk = int(raw_id)
    except ValueError:
        raise CommandError(f"'{raw_id}' is not a dead letter id (a number)") from None
    letter = (
        DeadLetter.objects.select_related("run__workflow", "step_run", "resolved_by")
        .filter(pk=pk)
        .first()
    )
    if letter is None:
        raise CommandError(f"no dead letter with id {pk}")
    return letter


class Command(BaseCommand):
    help = (
        "Show a dead letter: its run, step, attempts, whole error and the rendered config of "
        "its last attempt as JSON. --requeue runs the step again with fresh attempts (reopening "
        "its run, and resetting the steps skipped because it failed); --discard closes it. "
        "Exits 1 if it is no longer open."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("id", metavar="ID", help="The dead letter's id.")
        choice = parser.add_mutually_exclusive_group()
        choice.add_argument("--requeue", action="store_true", help="Run the step again.")
        choice.add_argument("--discard", action="store_true", help="Close it; nothing runs.")
        add_as_argument(parser, "requeues or discards")

    def handle(self, *args: Any, **options: Any) -> None:
        letter = get_dead_letter(options["id"])
        if not (options["requeue"] or options["discard"]):
            self.write_letter(letter)
            return
        user, actor = acting_user(options["username"], "run", letter.run.workflow_id)
        try:
            if options["requeue"]:
                run = recovery.requeue_dead_letter(letter, user=user, actor=actor)
                self.stdout.write(
                    f"dead letter {letter.pk} requeued: step '{letter.step_run.name}' runs "
                    f"again; run {run.pk} is {run.status}"
                )
            else:
                recovery.discard_dead_letter(letter, user=user, actor=actor)
                self.stdout.write(f"dead letter {letter.pk} discarded")
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None

    def write_letter(self, letter: DeadLetter) -> None:
        fields = [
            ("dead letter", str(letter.pk)),
            ("status", resolution(letter)),
            ("run", f"{letter.run_id} ({letter.run.status})"),
            ("workflow", letter.run.workflow.name),
            ("step", letter.step_run.name),
            ("attempts", str(letter.attempts)),
            ("created", format_time(letter.created_at)),
            ("resolved", format_time(letter.resolved_at)),
        ]
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            self.stdout.write(f"{label:<{width}}  {value}")
        self.stdout.write("\nerror:")
        for line in letter.error.splitlines() or ["-"]:
            self.stdout.write(f"  {line}")
        self.stdout.write("\nconfig:")
        config = json.dumps(letter.config, ensure_ascii=False, indent=2, sort_keys=True)
        for line in config.splitlines():
            self.stdout.write(f"  {line}")
