"""Start a run from the command line and, with --wait, follow it until it ends.

The worker cluster (`qcluster`) executes the steps; this command only starts the run and watches.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.language.errors import DefinitionError
from flows.language.inputs import InputError
from flows.language.parse import load_document
from flows.models import Workflow
from runs import services
from runs.engine.states import RunStatus, StepStatus
from runs.models import Run, StepRun

POLL_SECONDS = 0.2
EXIT_FAILED = 1
EXIT_TIMEOUT = 2


class Command(BaseCommand):
    help = (
        "Start a run of the workflow's latest version and print its id. With --wait, print each "
        "step's status changes until the run ends; exit 0 if it succeeded, 1 if it failed or was "
        "cancelled, 2 if it is still going after --timeout seconds. The steps run on the worker "
        "cluster (qcluster), which must be running. With --idempotency-key, starting again with "
        "the same key prints (and follows) the run it started the first time."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", metavar="NAME", help="The workflow's name.")
        given = parser.add_mutually_exclusive_group()
        given.add_argument("--input", metavar="JSON", help="The run input, a JSON object.")
        given.add_argument(
            "--input-file", metavar="PATH", help="A file holding the run input (JSON or YAML)."
        )
        parser.add_argument(
            "--idempotency-key",
            type=parse_key,
            default="",
            metavar="KEY",
            help="Start at most one run per key of this workflow; the same input is required.",
        )
        parser.add_argument(
            "--priority",
            type=parse_priority,
            metavar="1-10",
            help="Among queued runs, higher starts first (default: the workflow's priority).",
        )
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            metavar="SECONDS",
            help="With --wait: stop waiting after this long (default 600); the run goes on.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        workflow = Workflow.objects.select_related("latest_version").filter(name=name).first()
        if workflow is None:
            raise CommandError(f"no workflow named '{name}'")
        value = read_input(options["input"], options["input_file"])
        run = self.start(workflow, value, options["idempotency_key"], options["priority"])
        if not getattr(run, "created", True):
            # stderr, so that scripts reading the id from stdout still get just the id.
            self.stderr.write(
                f"run {run.pk} was already started with idempotency key "
                f"{options['idempotency_key']!r}; not starting another"
            )
        if not options["wait"]:
            self.stdout.write(str(run.pk))
            return
        self.stdout.write(f"run {run.pk} started")
        self.wait(run, options["timeout"])

    def start(self, workflow: Workflow, value: Any, key: str, priority: int | None) -> Run:
        try:
            return services.start_run(
                workflow,
                value,
                actor="cli",
                source="cli",
                idempotency_key=key,
                priority=priority,
            )
        except InputError as exc:
            problems = "\n".join(f"  {problem}" for problem in exc.problems)
            raise CommandError(
                f"the input does not fit the input schema of '{workflow.name}':\n{problems}",
                returncode=EXIT_FAILED,
            ) from None
        except services.InvalidTransition as exc:
            raise CommandError(str(exc)) from None

    def wait(self, run: Run, timeout: float) -> None:
        """Print step changes until the run is final; raise CommandError unless it succeeded."""
        watch = StepWatch(run)
        deadline = time.monotonic() + timeout
        while not watch.poll(self.stdout.write):
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"run {run.pk} is still {watch.status} after {timeout:g}s; it goes on "
                    f"(see `manage.py show_run {run.pk}`)",
                    returncode=EXIT_TIMEOUT,
                )
            time.sleep(POLL_SECONDS)
        self.stdout.write(f"run {run.pk} {watch.status}")
        if watch.status != RunStatus.SUCCEEDED:
            run.refresh_from_db(fields=["error"])
            raise CommandError(run.error or f"run {run.pk} {watch.status}", returncode=EXIT_FAILED)


class StepWatch:
    """What one run's steps looked like at the last poll, so that only changes are printed."""

    def __init__(self, run: Run) -> None:
        self.run_id = run.pk
        self.status = RunStatus(run.status)
        names = StepRun.objects.filter(run_id=run.pk).values_list("name", flat=True)
        # Every step starts pending: the first poll reports whatever happened since the start.
        self.seen: dict[str, str] = dict.fromkeys(names, StepStatus.PENDING)
        self.width = max(map(len, self.seen), default=0)

    def poll(self, write: Callable[[str], Any]) -> bool:
        """Print the steps whose status changed since the last poll; True once the run is final.

        The run's status is read before its steps, so a final run's last step changes are printed.
        """
        self.status = RunStatus(Run.objects.values_list("status", flat=True).get(pk=self.run_id))
        steps = StepRun.objects.filter(run_id=self.run_id).values_list("name", "status")
        for name, status in steps:
            if self.seen.get(name) != status:
                write(f"  {name:<{self.width}}  {status}")
                self.seen[name] = status
        return self.status.is_final


def parse_priority(raw: str) -> int:
    """--priority: an integer from 1 to 10, as the API and the definition language allow."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 10, not {raw!r}")
    return value


MAX_KEY = 200
"""The length of Run.idempotency_key, as the API allows."""


def parse_key(raw: str) -> str:
    """--idempotency-key: what fits the column (the API refuses longer keys too)."""
    if len(raw) > MAX_KEY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_KEY} characters")
    return raw


def read_input(raw: str | None, path: str | None) -> Any:
    """The run input from --input (JSON) or --input-file (JSON or YAML); None when neither."""
    try:
        if raw is not None:
            return load_document(raw, fmt="json")
        if path is not None:
            return load_document(Path(path).read_bytes())
    except DefinitionError as exc:
        raise CommandError(f"{'--input' if raw is not None else path}: {exc}") from None
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    return None
