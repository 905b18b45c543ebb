"""Print a unified diff of two versions of a workflow (their canonical YAML)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows import services
from flows.models import Workflow


def workflow_named(name: str) -> Workflow:
    workflow = Workflow.objects.filter(name=name).select_related("latest_version").first()
    if workflow is None:
        raise CommandError(f"no workflow named '{name}'")
    return workflow


class Command(BaseCommand):
    help = (
        "Show what changed between two versions of a workflow: a unified diff of their "
        "canonical YAML (keys sorted, so only changes in meaning show). Prints nothing when "
        "they are the same."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("old", type=int, metavar="FROM", help="The older version number.")
        parser.add_argument("new", type=int, metavar="TO", help="The newer version number.")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = workflow_named(options["name"])
        try:
            diff = services.diff_versions(workflow, options["old"], options["new"])
        except services.VersionNotFound as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(diff, ending="")
