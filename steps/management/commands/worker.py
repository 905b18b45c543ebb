"""`manage.py worker --queue gpu --capacity 2`: a worker cluster for some queues, registered.

One Django-Q2 cluster (qcluster process) per queue, each reading that queue's broker list with
`--capacity` workers; the launcher registers them in the worker registry under one name,
heartbeats while they run, restarts one that dies and, on Ctrl-C or SIGTERM, stops them and
marks itself stopped. No web server and no tick loop: `serve` runs those.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from flows.language.spec import DEFAULT_QUEUE
from runs.management.commands.serve import Child, cluster_env, register_clusters
from runs.management.commands.serve import Command as ServeCommand
from steps.worker_rules import check_queue, check_worker_name
from steps.workers import WorkerNameTaken


class Command(ServeCommand):
    help = "Run a worker cluster serving the given queues, registered in the worker registry."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help=f"A queue to serve; repeat for several (default: {DEFAULT_QUEUE}).",
        )
        parser.add_argument(
            "--capacity",
            type=int,
            default=settings.Q_CLUSTER["workers"],
            help="Steps run at once per queue: Django-Q2 workers (default: FURROW_WORKERS).",
        )
        parser.add_argument(
            "--name",
            default=os.environ.get("FURROW_WORKER_NAME") or None,
            help="Registry name (default: <queues>@<host>); unique among live workers.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues, capacity, name = self._checked(options)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        clusters = [
            Child(f"cluster {queue}", [*manage, "qcluster"], env=cluster_env(queue, capacity))
            for queue in queues
        ]
        try:
            beacon = register_clusters(clusters, queues, capacity, name)
        except WorkerNameTaken as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        for child in clusters:
            child.start()
        self.stdout.write(
            f"worker {beacon.name} serving {', '.join(queues)} with {capacity} "
            f"worker(s) each (Ctrl-C stops it)"
        )
        try:
            self._watch(clusters, stop)
        finally:
            self._stop_all(clusters)
            beacon.stop()

    def _checked(self, options: dict[str, Any]) -> tuple[list[str], int, str | None]:
        queues = list(dict.fromkeys(options["queues"] or [DEFAULT_QUEUE]))
        try:
            for queue in queues:
                check_queue(queue)
            if options["name"]:
                check_worker_name(options["name"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["capacity"] < 1:
            raise CommandError("--capacity must be at least 1")
        return queues, options["capacity"], options["name"]
