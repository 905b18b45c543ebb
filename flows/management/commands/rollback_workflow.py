"""Roll a workflow back: publish an earlier version's content as its newest version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows import services
from flows.language.errors import DefinitionError
from flows.management.commands.diff_versions import workflow_named
from runs.management.commands.pause_run import acting_user, add_as_argument


class Command(BaseCommand):
    help = (
        "Publish version VERSION's content again as the workflow's newest version. History is "
        "kept: the content comes back under a new number, and runs already started keep their "
        "version. Nothing is written when that content already is the latest version."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("version", type=int, metavar="VERSION")
        add_as_argument(parser, "rolls back")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = workflow_named(options["name"])
        user, actor = acting_user(options["username"], "edit", workflow.pk)
        try:
            published = services.rollback(workflow, options["version"], user=user, actor=actor)
        except services.VersionNotFound as exc:
            raise CommandError(str(exc)) from None
        except DefinitionError as exc:
            raise CommandError(f"version {options['version']} no longer validates: {exc}") from None
        version = published.version
        if published.created:
            self.stdout.write(f"{version}: the content of v{options['version']}, now the latest")
        else:
            self.stdout.write(f"{version} already has that content; nothing published")
