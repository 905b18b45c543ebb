"""One foreground command for the whole product: daphne, a Django-Q2 cluster and the tick loop.

Each runs as its own process (never a cluster inside the web process); one that dies is
restarted; Ctrl-C or SIGTERM stops all three: SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from steps.workers import Beacon, WorkerNameTaken

GRACE_SECONDS = 10.0
RESTART_DELAY = 1.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    env: dict[str, str] | None = None
    """Added to the launcher's environment (a cluster's queue and registry name)."""

    def start(self) -> None:
        # A session of its own, so a terminal's Ctrl-C reaches only the launcher, which then
        # stops the children in order instead of all of them racing.
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.argv, start_new_session=True, env=env)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        # The main process only: a qcluster whose sentinel gets SIGTERM too dies in the middle of
        # its own shutdown handshake and hangs until killed. Its main process stops the rest.
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            _signal_group(self.proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def children(host: str, port: int) -> list[Child]:
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    daphne = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        host,
        "-p",
        str(port),
        "orchestrator.asgi:application",
    ]
    queue = settings.FURROW["WORKER_QUEUE"]
    return [
        Child("web", daphne),
        Child("worker", [*manage, "qcluster"], env=cluster_env(queue)),
        Child("timers", [*manage, "tick"]),
    ]


def default_worker_name(queues: list[str]) -> str:
    """`<queues>@<host>`, stable across restarts so the registry keeps one row per launcher."""
    return f"{'-'.join(queues)}@{socket.gethostname()}"


def cluster_env(queue: str, capacity: int | None = None) -> dict[str, str]:
    """The environment of a qcluster serving `queue` (register_clusters adds its name)."""
    env = {"FURROW_WORKER_QUEUE": queue}
    if capacity is not None:
        env["FURROW_WORKERS"] = str(capacity)
    return env


def register_clusters(
    clusters: list[Child], queues: list[str], capacity: int, name: str | None = None
) -> Beacon:
    """Register the launcher of `clusters` in the worker registry before they start, so every
    step they run names it. A default name that another live launcher holds (a second `serve`
    on this machine and database) gets this process's pid; a chosen one raises WorkerNameTaken.
    """
    chosen = name or default_worker_name(queues)
    try:
        beacon = _beacon(chosen, clusters, queues, capacity)
    except WorkerNameTaken:
        if name:
            raise
        chosen = f"{chosen}:{os.getpid()}"
        beacon = _beacon(chosen, clusters, queues, capacity)
    for child in clusters:
        child.env = {**(child.env or {}), "FURROW_WORKER_NAME": chosen}
    return beacon


def _beacon(name: str, clusters: list[Child], queues: list[str], capacity: int) -> Beacon:
    beacon = Beacon(
        name,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=queues,
        capacity=capacity * len(queues),
        alive=lambda: any(child.alive() for child in clusters),
        pids=lambda: [child.proc.pid for child in clusters if child.proc and child.alive()],
    )
    beacon.start()
    return beacon


class Command(BaseCommand):
    help = (
        "Run the web server (daphne), a worker cluster (qcluster) and the timer loop until Ctrl-C."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--no-web", action="store_true", help="Only the worker cluster and timers."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        procs = children(options["host"], options["port"])
        if options["no_web"]:
            procs = procs[1:]
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        clusters = [child for child in procs if child.name == "worker"]
        beacon = register_clusters(
            clusters, [settings.FURROW["WORKER_QUEUE"]], settings.Q_CLUSTER["workers"]
        )
        for child in procs:
            child.start()
        if not options["no_web"]:
            self.stdout.write(
                f"Furrow is serving on http://{options['host']}:{options['port']}/admin/ (Ctrl-C stops it)"
            )
        try:
            self._watch(procs, stop)
        finally:
            self._stop_all(procs)
            beacon.stop()

    def _watch(self, procs: list[Child], stop: threading.Event) -> None:
        while not stop.wait(0.5):
            for child in procs:
                if child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                self.stderr.write(f"{child.name} exited with {code}; restarting it")
                child.restarts += 1
                time.sleep(min(RESTART_DELAY * child.restarts, 10.0))
                child.start()

    def _stop_all(self, procs: list[Child]) -> None:
        for child in procs:
            child.terminate()
        deadline = time.monotonic() + GRACE_SECONDS
        for child in procs:
            while child.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            child.kill()
            if child.proc is not None:
                child.proc.wait()
        self.stdout.write("stopped")
