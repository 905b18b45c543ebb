"""Publish workflow definition files, e.g. a repository's flows on deploy. Idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.language.errors import DefinitionError
from flows.management.commands.validate import definition_files, read_definition, write_problems
from flows.services import publish


class Command(BaseCommand):
    help = (
        "Publish workflow definitions (files, or directories of *.yaml, *.yml and *.json). "
        "A file identical to its workflow's latest version is left unchanged. Invalid files are "
        "reported and skipped; the command then exits 1 after trying every file."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="A file or a directory.")

    def handle(self, *args: Any, **options: Any) -> None:
        files = definition_files(options["paths"])
        if not files:
            raise CommandError("no definition files (*.yaml, *.yml, *.json) found")
        failed = [path for path in files if not self.import_one(path)]
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(files)} files were not published", returncode=1
            )

    def import_one(self, path: Path) -> bool:
        try:
            doc, text = read_definition(path)
            published = publish(doc, source=text, actor="cli")
        except DefinitionError as exc:
            write_problems(self.stdout, path, exc.problems)
            return False
        version = published.version
        verb = "published" if published.created else "unchanged"
        self.stdout.write(f"{verb} {version.workflow.name} v{version.number}")
        return True
