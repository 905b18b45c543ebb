"""Rebuild runs' states from their event logs and compare them with the stored rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs.management.commands.show_run import get_run
from runs.models import Run
from runs.verify import Verdict, check_run


class Command(BaseCommand):
    help = (
        "Replay each run's events and compare the states they describe with the run's and its "
        "steps' rows. Prints `ok <id>` for a run that agrees, else its differences; exits with "
        "status 1 when any run differs."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("ids", nargs="*", metavar="ID", help="The runs' ids.")
        parser.add_argument("--all", action="store_true", help="Every run, child runs included.")
        parser.add_argument(
            "--recent", type=int, metavar="N", help="The N most recently created runs."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        verdicts = [check_run(run) for run in self.selected(options)]
        if options["json"]:
            self.write_json(verdicts)
        else:
            for verdict in verdicts:
                self.write_verdict(verdict)
        differing = sum(bool(v.differences) for v in verdicts)
        if differing:
            raise CommandError(
                f"{differing} of {len(verdicts)} runs differ from their event logs", returncode=1
            )

    def selected(self, options: dict[str, Any]) -> Iterable[Run]:
        chosen = [bool(options["ids"]), options["all"], options["recent"] is not None]
        if sum(chosen) != 1:
            raise CommandError("give run ids, --all or --recent N (exactly one of them)")
        runs = Run.objects.select_related("version")
        if options["ids"]:
            return [get_run(raw, runs) for raw in options["ids"]]
        if options["all"]:
            # Runs are read in chunks: memory stays bounded however many there are.
            return runs.order_by("created_at", "pk").iterator(chunk_size=200)
        if options["recent"] < 1:
            raise CommandError("--recent must be at least 1")
        return runs.order_by("-created_at", "-pk")[: options["recent"]]

    def write_verdict(self, verdict: Verdict) -> None:
        if verdict.differences:
            self.stdout.write(f"differs {verdict.run_id}")
            for difference in verdict.differences:
                self.stdout.write(f"  {difference}")
        else:
            self.stdout.write(f"ok {verdict.run_id}")
        if verdict.unknown_types:
            self.stdout.write(f"  note: unknown event types ignored: {_listed(verdict)}")

    def write_json(self, verdicts: list[Verdict]) -> None:
        data = {
            "ok": not any(v.differences for v in verdicts),
            "runs": {
                str(v.run_id): {
                    "ok": not v.differences,
                    "differences": v.differences,
                    "unknown_types": sorted(v.unknown_types),
                }
                for v in verdicts
            },
        }
        self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2))


def _listed(verdict: Verdict) -> str:
    return ", ".join(sorted(verdict.unknown_types))
