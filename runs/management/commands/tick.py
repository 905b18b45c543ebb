"""The timer loop: promotes due retries, reaps lost leases, re-sends lost queue messages."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from runs.timers import tick


class Command(BaseCommand):
    help = "Run the timer loop (retries, leases, lost messages) until interrupted."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Do one pass and exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            self.stdout.write(f"{tick()} changes")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        interval = settings.FURROW["TICK_INTERVAL"]
        while not stop.is_set():
            if not tick():
                stop.wait(interval)
