"""Check workflow definition files without publishing them (a CI gate for a repository of flows)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from flows.language.errors import DefinitionError, Problem
from flows.language.validate import validate
from flows.services import parse_definition
from steps.registry import LANGUAGE_CHECKS, step_type_schemas

SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
"""Definition files a directory argument expands to, and the format each suffix means."""


def definition_files(paths: Iterable[str]) -> list[Path]:
    """Files named by `paths`: a file as given, a directory as its definition files, sorted and recursive.

    Raises CommandError naming the first path that does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"{raw}: no such file or directory")
    return files


def read_definition(path: Path) -> tuple[Any, str]:
    """The parsed document and its text; raises DefinitionError when it cannot be parsed."""
    data = path.read_bytes()
    doc = parse_definition(data, fmt=SUFFIXES.get(path.suffix, "auto"))
    return doc, data.decode("utf-8")  # parsing succeeded, so it is UTF-8


def write_problems(out: OutputWrapper, path: Path, problems: Iterable[Problem]) -> None:
    """One line per problem: `<file>: <path>: <message>` (`<file>: <message>` for the document)."""
    for problem in problems:
        out.write(f"{path}: {problem}")


class Command(BaseCommand):
    help = (
        "Check workflow definitions (files, or directories of *.yaml, *.yml and *.json) without "
        "publishing them. Prints 'ok' per valid file and one line per problem; exits 1 if any "
        "file has a problem."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="A file or a directory.")

    def handle(self, *args: Any, **options: Any) -> None:
        files = definition_files(options["paths"])
        if not files:
            raise CommandError("no definition files (*.yaml, *.yml, *.json) found")
        failed = [path for path in files if not self.check_file(path)]
        if failed:
            raise CommandError(f"{len(failed)} of {len(files)} files have problems", returncode=1)

    def check_file(self, path: Path) -> bool:
        try:
            doc, _ = read_definition(path)
        except DefinitionError as exc:
            write_problems(self.stdout, path, exc.problems)
            return False
        problems = validate(doc, step_type_schemas(), LANGUAGE_CHECKS)
        if problems:
            write_problems(self.stdout, path, problems)
            return False
        self.stdout.write(f"ok   {path} ({doc['name']}, {len(doc['steps'])} steps)")
        return True
