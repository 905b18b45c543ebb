"""`manage.py bench`: time noop chains and fan-outs through the real worker cluster.

Scenarios chain-40, chain-200, fanout-40 and fanout-200 (a root, N parallel steps, a join). For each:
wall time from start to final status, steps per second, and orchestration overhead per step
(noop steps do no work, so all of the time is orchestration). It also counts the SQL statements
each step costs on the worker path, measured in this process with the queue in sync mode.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.conf import Conf

from flows import services as flow_services
from flows.models import Workflow
from runs import services
from runs.engine.states import RunStatus
from runs.models import Run

SCENARIOS = ("chain-40", "chain-200", "fanout-40", "fanout-200")
PREFIX = "bench-"


def definition(scenario: str) -> dict[str, Any]:
    shape, size = scenario.split("-")
    n = int(size)
    steps: dict[str, Any] = {}
    if shape == "chain":
        for i in range(n):
            steps[f"s{i}"] = {"type": "noop", **({"needs": [f"s{i - 1}"]} if i else {})}
    else:
        steps["root"] = {"type": "noop"}
        for i in range(n):
            steps[f"w{i}"] = {"type": "noop", "needs": ["root"]}
        steps["join"] = {"type": "noop", "needs": [f"w{i}" for i in range(n)]}
    return {"name": PREFIX + scenario, "description": f"bench: {scenario}", "steps": steps}


def step_count(scenario: str) -> int:
    shape, size = scenario.split("-")
    return int(size) + (2 if shape == "fanout" else 0)


def wait_final(run: Run, timeout: float) -> float:
    """Poll until the run is final; returns the moment it was seen final (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Run.objects.filter(pk=run.pk).values_list("status", flat=True).get()
        if RunStatus(status).is_final:
            if status != RunStatus.SUCCEEDED:
                raise CommandError(f"bench run {run.pk} ended {status}")
            return time.monotonic()
        time.sleep(0.005)
    raise CommandError(
        f"bench run {run.pk} did not finish in {timeout}s (is a worker cluster running?)"
    )


class Command(BaseCommand):
    help = "Benchmark orchestration overhead through the real worker cluster."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON document.")
        parser.add_argument(
            "--scenario", action="append", choices=SCENARIOS, help="Repeatable; default all."
        )
        parser.add_argument(
            "--repeat", type=int, default=3, help="Runs per scenario; the median is reported."
        )
        parser.add_argument(
            "--no-cluster",
            action="store_true",
            help="Use an already running qcluster and tick loop.",
        )
        parser.add_argument(
            "--keep", action="store_true", help="Keep the bench workflows and runs."
        )
        parser.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args: Any, **options: Any) -> None:
        scenarios = options["scenario"] or list(SCENARIOS)
        workflows = {
            s: flow_services.publish(definition(s), actor="bench").version.workflow
            for s in scenarios
        }
        report: dict[str, Any] = {
            "database": connection.vendor,
            "broker": "redis" if settings.REDIS_URL else "orm",
            "workers": settings.Q_CLUSTER["workers"],
            "sql_per_step": self._sql_per_step(),
            "scenarios": [],
        }
        procs = [] if options["no_cluster"] else self._start_cluster()
        try:
            self._warm_up(workflows[scenarios[0]], options["timeout"])
            for scenario in scenarios:
                report["scenarios"].append(self._measure(scenario, workflows[scenario], options))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if not options["keep"]:
                self._clean_up()
        self._print(report, options["json"])

    def _sql_per_step(self) -> dict[str, float]:
        """Statements per step on the worker path, with Django-Q2 in sync mode (no broker)."""
        flow_services.publish(definition("chain-40"), actor="bench")
        flow_services.publish(definition("fanout-40"), actor="bench")
        counts = {}
        saved = Conf.SYNC
        Conf.SYNC = True
        try:
            for scenario in ("chain-40", "fanout-40"):
                workflow = Workflow.objects.get(name=PREFIX + scenario)
                with CaptureQueriesContext(connection) as queries:
                    run = services.start_run(workflow, {}, actor="bench", source="bench")
                run.refresh_from_db()
                if run.status != RunStatus.SUCCEEDED:
                    raise CommandError(f"in-process {scenario} ended {run.status}")
                counts[scenario] = round(len(queries) / step_count(scenario), 1)
        finally:
            Conf.SYNC = saved
        return counts

    def _start_cluster(self) -> list[subprocess.Popen[bytes]]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        quiet = {"stdout": subprocess.DEVNULL}
        return [
            subprocess.Popen([*manage, "qcluster"], **quiet),
            subprocess.Popen([*manage, "tick"], **quiet),
        ]

    def _warm_up(self, workflow: Workflow, timeout: float) -> None:
        run = services.start_run(workflow, {}, actor="bench", source="bench")
        wait_final(run, timeout)

    def _measure(
        self, scenario: str, workflow: Workflow, options: dict[str, Any]
    ) -> dict[str, Any]:
        times = []
        for _ in range(max(1, options["repeat"])):
            started = time.monotonic()
            run = services.start_run(workflow, {}, actor="bench", source="bench")
            times.append(wait_final(run, options["timeout"]) - started)
        seconds = statistics.median(times)
        steps = step_count(scenario)
        return {
            "name": scenario,
            "steps": steps,
            "seconds": round(seconds, 3),
            "min_seconds": round(min(times), 3),
            "steps_per_second": round(steps / seconds, 1),
            "overhead_ms_per_step": round(seconds * 1000 / steps, 2),
            "repeat": len(times),
        }

    def _clean_up(self) -> None:
        Run.objects.filter(workflow__name__startswith=PREFIX).delete()
        Workflow.objects.filter(name__startswith=PREFIX).delete()

    def _print(self, report: dict[str, Any], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write(
            f"database={report['database']} broker={report['broker']} workers={report['workers']}"
        )
        self.stdout.write(
            f"{'scenario':<12}{'steps':>6}{'seconds':>10}{'steps/s':>10}{'ms/step':>10}"
        )
        for row in report["scenarios"]:
            self.stdout.write(
                f"{row['name']:<12}{row['steps']:>6}{row['seconds']:>10.3f}"
                f"{row['steps_per_second']:>10.1f}{row['overhead_ms_per_step']:>10.2f}"
            )
        sql = ", ".join(f"{k}: {v}" for k, v in report["sql_per_step"].items())
        self.stdout.write(f"SQL statements per step (worker path, no broker): {sql}")
