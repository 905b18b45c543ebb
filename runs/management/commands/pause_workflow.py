"""Pause a workflow (new and queued runs wait), or resume it with --resume."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.models import Workflow
from runs import services
from runs.engine.states import RunStatus
from runs.management.commands.pause_run import acting_user, add_as_argument


class Command(BaseCommand):
    help = (
        "Pause a workflow: new runs are queued and queued runs wait; runs already going are not "
        "paused (use pause_run for those). With --resume, resume it: its queued runs start, "
        "highest priority first, as far as concurrency.max_runs allows. Exits 1 when the "
        "workflow already is in that state."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", metavar="NAME", help="The workflow's name.")
        parser.add_argument("--resume", action="store_true", help="Resume instead of pause.")
        add_as_argument(parser, "pauses or resumes")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        workflow = Workflow.objects.filter(name=name).first()
        if workflow is None:
            raise CommandError(f"no workflow named '{name}'")
        _, actor = acting_user(options["username"], "edit", workflow.pk)
        try:
            if options["resume"]:
                self.resume(workflow, actor)
            else:
                services.pause_workflow(workflow, actor=actor)
                self.stdout.write(f"workflow '{name}' paused; new runs queue until it is resumed")
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None

    def resume(self, workflow: Workflow, actor: str) -> None:
        queued = workflow.runs.filter(status=RunStatus.QUEUED)
        before = queued.count()
        services.resume_workflow(workflow, actor=actor)
        # Resuming admits what has room (max_runs); say how many started and how many still wait.
        left = queued.count()
        self.stdout.write(
            f"workflow '{workflow.name}' resumed; {before - left} queued run(s) started, "
            f"{left} still queued"
        )
