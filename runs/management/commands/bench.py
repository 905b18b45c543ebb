"""`manage.py bench`: time noop chains and fan-outs through the real worker cluster.

Scenarios chain-40, chain-200, fanout-40 and fanout-200 (a root, N parallel steps, a join). For each:
wall time from start to final status, steps per second, and orchestration overhead per step
(noop steps do no work, so all of the time is orchestration). It also counts the SQL statements
each step costs on the worker path, measured in this process with the queue in sync mode.

`--scenario stream` (opt-in, not part of the default run) measures log streaming instead: the
latency from a line a shell step prints to its arrival at an SSE client, lines per second through
one stream, and the web process's memory meanwhile (runs/bench_stream.py).

`--scenario page` (part of the default run) renders the run page of a finished 500-step run through
the whole Django stack and reports its time and SQL statements (runs/bench_page.py); the target
is under 300 ms.
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
from runs import bench_page, bench_stream, services
from runs.engine.states import RunStatus
from runs.models import Run

SCENARIOS = ("chain-40", "chain-200", "fanout-40", "fanout-200")
OPT_IN = ("stream",)
IN_PROCESS = ("page",)
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
            "--scenario",
            action="append",
            choices=SCENARIOS + IN_PROCESS + OPT_IN,
            help="Repeatable; default all but stream.",
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
        parser.add_argument(
            "--stream-lines",
            type=int,
            default=bench_stream.THROUGHPUT_LINES,
            help="Lines per throughput run of the stream scenario.",
        )
        parser.add_argument(
            "--stream-rate",
            type=float,
            default=0.0,
            help="Lines per second the throughput runs print (default 0: as fast as they can).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        selected = options["scenario"] or [*SCENARIOS, *IN_PROCESS]
        scenarios = [s for s in selected if s in SCENARIOS]
        workflows = {
            s: flow_services.publish(definition(s), actor="bench").version.workflow
            for s in scenarios
        }
        report: dict[str, Any] = {
            "database": connection.vendor,
            "broker": "redis" if settings.REDIS_URL else "orm",
            "workers": settings.Q_CLUSTER["workers"],
        }
        if scenarios:
            report["sql_per_step"] = self._sql_per_step()
        report["scenarios"] = []
        if "page" in selected:
            try:
                report["page"] = bench_page.measure(repeat=max(options["repeat"], 10))
            finally:
                if not options["keep"]:
                    bench_page.clean_up()
        needs_cluster = bool(scenarios) or "stream" in selected
        procs = [] if options["no_cluster"] or not needs_cluster else self._start_cluster()
        try:
            if scenarios:
                self._warm_up(workflows[scenarios[0]], options["timeout"])
            for scenario in scenarios:
                report["scenarios"].append(self._measure(scenario, workflows[scenario], options))
            if "stream" in selected:
                report["stream"] = self._measure_stream(options)
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

    def _measure_stream(self, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "settings": bench_stream.settings_in_effect(),
            **bench_stream.measure(
                timeout=options["timeout"],
                repeat=options["repeat"],
                lines=options["stream_lines"],
                rate=options["stream_rate"],
            ),
        }

    def _clean_up(self) -> None:
        Run.objects.filter(workflow__name__startswith=PREFIX).delete()
        Workflow.objects.filter(name__startswith=PREFIX).delete()
        bench_stream.clean_up()

    def _print(self, report: dict[str, Any], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write(
            f"database={report['database']} broker={report['broker']} workers={report['workers']}"
        )
        if report["scenarios"]:
            self._print_scenarios(report)
        if "stream" in report:
            self._print_stream(report["stream"])
        if "page" in report:
            self._print_page(report["page"])

    def _print_page(self, page: dict[str, Any]) -> None:
        self.stdout.write(
            f"run page, {page['steps']} steps, {page['log_lines']} log lines ({page['bytes']} bytes):"
            f" first {page['first_ms']:.0f} ms, then p50 {page['page_ms']['p50']:.0f} ms"
            f" p95 {page['page_ms']['p95']:.0f} ms; live part p50 {page['live_ms']['p50']:.0f} ms"
            f" p95 {page['live_ms']['p95']:.0f} ms; {page['sql']} SQL statements"
        )

    def _print_scenarios(self, report: dict[str, Any]) -> None:
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

    def _print_stream(self, stream: dict[str, Any]) -> None:
        lat, rss = stream["latency_ms"], stream["rss_mb"]
        knobs = " ".join(f"{k}={v}" for k, v in stream["settings"].items())
        self.stdout.write(f"stream: shell step -> SSE client ({knobs})")
        self.stdout.write(
            f"  latency ms    p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  max {lat['max']:.1f}"
            f"  ({lat['lines']} lines, 10 ms apart)"
        )
        for part, label in (("written", "printed -> row"), ("delivered", "row -> client")):
            self.stdout.write(
                f"    {label:<15}p50 {lat[part]['p50']:.1f}  p95 {lat[part]['p95']:.1f}"
            )
        paced = f"printed at {stream['rate']:g}/s" if stream["rate"] else "printed at once"
        self.stdout.write(
            f"  throughput    {stream['lines_per_second']} lines/s at the client, rows written at"
            f" {stream['written_lines_per_second']} lines/s ({stream['lines']} lines a run, {paced})"
        )
        if "latency_ms_at_rate" in stream:
            loaded = stream["latency_ms_at_rate"]
            self.stdout.write(
                f"    latency     p50 {loaded['p50']:.1f}  p95 {loaded['p95']:.1f}"
                f"  max {loaded['max']:.1f}"
            )
        self.stdout.write(
            f"  daphne RSS MB start {rss['start']}  middle {rss['middle']}  end {rss['end']}"
            f"  peak {rss['peak']}"
        )
