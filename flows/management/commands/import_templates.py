"""Import the orchestrator seed's workflow-template pack (templates.json). Idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from flows import workflow_templates as service
from flows.language.errors import DefinitionError
from flows.language.parse import load_document
from runs.management.commands.pause_run import acting_user, add_as_argument


class Command(BaseCommand):
    help = (
        "Import workflow templates from a template pack in the orchestrator seed's format "
        '({"templates": [{name, description, steps: [...]}]}). A template of the same name is '
        "updated, so importing again changes nothing. All or nothing: a malformed pack is "
        "reported and nothing is imported (exit 1)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", metavar="FILE", help="The pack, e.g. templates.json.")
        add_as_argument(parser, "imports")

    def handle(self, *args: Any, **options: Any) -> None:
        user, actor = acting_user(options["username"])
        if user is not None and not user.has_perms(
            ["flows.add_workflowtemplate", "flows.change_workflowtemplate"]
        ):
            raise CommandError(f"user '{user.get_username()}' may not add and change templates")
        try:
            text = Path(options["path"]).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {options['path']}: {exc.strerror}") from None
        try:
            with transaction.atomic():
                done = service.import_pack(load_document(text), actor=actor, user=user)
        except DefinitionError as exc:
            for problem in exc.problems:
                self.stdout.write(f"{options['path']}: {problem}")
            raise CommandError("the pack is not valid; nothing was imported") from None
        for item in done:
            self.stdout.write(f"{item.outcome} {item.template.name}")
