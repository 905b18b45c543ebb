"""The `stream` scenario of `manage.py bench`: from a line a shell step prints to an SSE client.

A daphne of its own on a free port serves the log stream; the bench's worker cluster runs the
step. Each line the step prints carries the wall-clock time it was printed, so the client (httpx,
in the bench process, on the same machine and clock) knows each line's latency. The step waits
for a "go" file that the bench creates once the stream is connected, so no line is printed before
anyone listens and the numbers measure live following, not the replay of a backlog.

Two phases: latency (a few hundred lines, 10 ms apart) and throughput (tens of thousands of lines
printed as fast as Python can), during which daphne's resident memory is sampled: it must not grow
with the length of the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

from flows import services as flow_services
from flows.models import Workflow, WorkflowGrant
from runs import services
from runs.engine.states import RunStatus
from runs.management.commands.serve import children
from runs.models import Run

WORKFLOW = "bench-stream"
USERNAME = "bench-stream"
LATENCY_LINES = 200
LATENCY_RATE = 100.0
"""Lines per second of the latency runs: one every 10 ms."""
THROUGHPUT_LINES = 20_000
GO_WAIT_SECONDS = 60
HOST = "127.0.0.1"

# Prints "<index> <time.time()>" per line once the go file exists, BENCH_RATE lines a second
# (flushed whenever it is more than 1 ms ahead), or with rate 0 into the pipe's buffer as fast as
# it can. No braces: `with` values are Jinja templates.
EMIT = """
import os, sys, time
go, lines, rate = os.environ["BENCH_GO"], int(os.environ["BENCH_LINES"]), float(os.environ["BENCH_RATE"])
deadline = time.time() + float(os.environ["BENCH_GO_WAIT"])
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("bench: the go file never appeared")
    time.sleep(0.002)
start = time.time()
for i in range(lines):
    print(i, repr(time.time()))
    ahead = start + (i + 1) / rate - time.time() if rate else 0
    if ahead > 0.001:
        sys.stdout.flush()
        time.sleep(ahead)
"""


def definition() -> dict[str, Any]:
    return {
        "name": WORKFLOW,
        "description": "bench: shell step lines to an SSE client",
        "input": {
            "type": "object",
            "properties": {
                "go": {"type": "string"},
                "lines": {"type": "integer"},
                "rate": {"type": "number"},
            },
            "required": ["go", "lines", "rate"],
        },
        "steps": {
            "emit": {
                "type": "shell",
                "argv": [sys.executable, "-c", EMIT],
                "env": {
                    "BENCH_GO": "{{ input.go }}",
                    "BENCH_LINES": "{{ input.lines }}",
                    "BENCH_RATE": "{{ input.rate }}",
                    "BENCH_GO_WAIT": GO_WAIT_SECONDS,
                },
            }
        },
    }


# Pure helpers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0 < q <= 100) of `values`, which must not be empty."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of durations given in seconds, in milliseconds."""
    return {
        "p50": round(percentile(seconds, 50) * 1000, 1),
        "p95": round(percentile(seconds, 95) * 1000, 1),
        "max": round(max(seconds) * 1000, 1),
    }


def status_kb(status: str, name: str) -> int:
    """A `kB` field (VmRSS, VmHWM) of a /proc/<pid>/status text."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            amount, unit = value.split()
            if unit != "kB":
                raise ValueError(f"{name} is in {unit}, not kB")
            return int(amount)
    raise ValueError(f"no {name} in the status text")


def memory_mb(pid: int, name: str = "VmRSS") -> float:
    """A process's resident memory (VmRSS) or its peak (VmHWM), in MB (2**20 bytes)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return round(status_kb(text, name) / 1024, 1)


def sse_messages(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """SSE messages ({"event", "id", "data"}, data parsed as JSON) from a stream's lines."""
    current: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in current:
                yield {
                    "event": current.get("event", "message"),
                    "id": current.get("id"),
                    "data": json.loads(current["data"]),
                }
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")


@dataclass(frozen=True)
class Arrival:
    """One log line as the client saw it: when it was printed, written and received (epoch s)."""

    printed: float
    written: float
    arrived: float


def arrival(data: dict[str, Any], arrived: float) -> Arrival:
    """From a log message's data ("<index> <printed time>" text, ISO created_at)."""
    printed = float(data["text"].split()[1])
    written = datetime.fromisoformat(data["created_at"]).timestamp()
    return Arrival(printed=printed, written=written, arrived=arrived)


def per_second(times: Sequence[float]) -> float:
    """Events per second from the first to the last of `times` (0 when fewer than two)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


# The scenario ---------------------------------------------------------------------------------


@dataclass
class Daphne:
    """A daphne serving this project on a free port; its pid is the web process to watch."""

    log_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, timeout: float) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        web = next(child for child in children(HOST, self.port) if child.name == "web")
        with (self.log_dir / "daphne.log").open("wb") as log:
            self.proc = subprocess.Popen(web.argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CommandError(f"daphne exited with {self.proc.returncode}: {self._log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise CommandError(f"daphne did not answer /health within {timeout}s: {self._log()}")

    def _log(self) -> str:
        return (self.log_dir / "daphne.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def api_client(base_url: str, timeout: float, workflow: Workflow) -> httpx.Client:
    """A client authenticated with the bench user's API token (both created when missing), who
    may view `workflow` and nothing else: the stream pays for the access check like any client's."""
    user, created = get_user_model().objects.get_or_create(username=USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    WorkflowGrant.objects.get_or_create(workflow=workflow, user=user, role="view")
    token, _ = Token.objects.get_or_create(user=user)
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Token {token.key}"}, timeout=timeout
    )


@dataclass
class Follower:
    """Starts a run, follows its log over SSE and lets the step go once the stream is connected."""

    client: httpx.Client
    workflow: Workflow
    go_dir: Path
    runs: int = 0

    def follow(
        self, lines: int, rate: float, on_line: Callable[[int], None] | None = None
    ) -> list[Arrival]:
        """Start a run printing `lines` lines, `rate` a second (0: at once); how they arrived.

        `on_line(count)` is called after each line with the count so far.
        """
        self.runs += 1
        go = self.go_dir / f"go-{self.runs}"
        run = services.start_run(
            self.workflow,
            {"go": str(go), "lines": lines, "rate": rate},
            actor="bench",
            source="bench",
        )
        received = self._read(run, go, on_line)
        _check(run, lines, len(received))
        return received

    def _read(self, run: Run, go: Path, on_line: Callable[[int], None] | None) -> list[Arrival]:
        # The whole log, unfiltered, as a client watching a run asks for it. (With `?stream=` a
        # page on PostgreSQL can read every later row of the run until the table is analysed.)
        url = f"/api/v1/runs/{run.pk}/logs/stream"
        received: list[Arrival] = []
        with self.client.stream("GET", url) as response:
            if response.status_code != 200:
                raise CommandError(f"{url} answered {response.status_code}")
            go.touch()
            for message in sse_messages(response.iter_lines()):
                if message["event"] == "end":
                    break
                if message["event"] == "log" and message["data"]["stream"] == "stdout":
                    received.append(arrival(message["data"], time.time()))
                    if on_line is not None:
                        on_line(len(received))
        return received


def _check(run: Run, expected: int, received: int) -> None:
    status = Run.objects.filter(pk=run.pk).values_list("status", flat=True).get()
    if status != RunStatus.SUCCEEDED:
        raise CommandError(f"bench stream run {run.pk} ended {status}")
    if received != expected:
        raise CommandError(f"bench stream run {run.pk}: {received} of {expected} lines arrived")


def latency(follower: Follower, repeat: int) -> dict[str, Any]:
    """Latency of lines printed 10 ms apart, pooled over `repeat` runs."""
    seen = [a for _ in range(repeat) for a in follower.follow(LATENCY_LINES, LATENCY_RATE)]
    return {
        **summary_ms([a.arrived - a.printed for a in seen]),
        "lines": len(seen),
        # Where the time goes: the step to its row (pipe, batching, insert), the row to the client.
        "written": summary_ms([max(0.0, a.written - a.printed) for a in seen]),
        "delivered": summary_ms([max(0.0, a.arrived - a.written) for a in seen]),
    }


def throughput(
    follower: Follower, pid: int, lines: int, rate: float, repeat: int
) -> dict[str, Any]:
    """Lines per second through one stream (median of `repeat` runs), and daphne's memory.

    With a `rate`, the step prints that many lines a second and the latency under that load is
    reported too; without one, it prints as fast as it can and the latency is only its backlog.
    """
    start = memory_mb(pid)
    samples: list[float] = []

    def sample_middle(count: int) -> None:
        if count == lines // 2:
            samples.append(memory_mb(pid))

    rates, written, delays = [], [], []
    for _ in range(repeat):
        seen = follower.follow(lines, rate, sample_middle)
        samples.append(memory_mb(pid))
        rates.append(per_second([a.arrived for a in seen]))
        written.append(per_second([a.written for a in seen]))
        delays.extend(a.arrived - a.printed for a in seen)
    return {
        "lines_per_second": round(statistics.median(rates)),
        "written_lines_per_second": round(statistics.median(written)),
        "lines_per_second_each": [round(r) for r in rates],
        "lines": lines,
        "rate": rate,
        **({"latency_ms_at_rate": summary_ms(delays)} if rate else {}),
        # Samples at the middle and the end of each run: the middle one is halfway through all
        # the lines streamed, the last one after all of them.
        "rss_mb": {
            "start": start,
            "middle": samples[(len(samples) - 1) // 2],
            "end": samples[-1],
            # The kernel updates VmHWM lazily: it can read a little below the last VmRSS.
            "peak": max(memory_mb(pid, "VmHWM"), samples[-1]),
        },
    }


def measure(
    *, timeout: float, repeat: int, lines: int = THROUGHPUT_LINES, rate: float = 0.0
) -> dict[str, Any]:
    """Run the scenario against the worker cluster that is already running; returns the report."""
    workflow = flow_services.publish(definition(), actor="bench").version.workflow
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request on stderr
    with tempfile.TemporaryDirectory(prefix="furrow-bench-") as tmp:
        daphne = Daphne(Path(tmp))
        try:
            daphne.start(timeout)
            assert daphne.proc is not None
            with api_client(daphne.url, timeout, workflow) as client:
                follower = Follower(client, workflow, Path(tmp))
                follower.follow(20, LATENCY_RATE)  # warm-up: worker imports, the first request
                report = {"latency_ms": latency(follower, max(1, repeat))}
                report |= throughput(follower, daphne.proc.pid, lines, rate, max(1, repeat))
        finally:
            daphne.stop()
    return report


def clean_up() -> None:
    get_user_model().objects.filter(username=USERNAME).delete()


def settings_in_effect() -> dict[str, float]:
    """The settings that shape the numbers (the child processes read the same environment)."""
    return {
        "log_flush_seconds": settings.FURROW["LOG_FLUSH_SECONDS"],
        "log_batch_lines": settings.FURROW["LOG_BATCH_LINES"],
        "stream_poll": settings.FURROW["STREAM_POLL"],
        "broker_poll": settings.Q_CLUSTER["poll"],
    }
