"""The timer loop: promotes due retries, reaps lost leases, re-sends lost queue messages."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from runs.timers import tick

log = logging.getLogger(__name__)


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
            try:
                busy = tick()
            except DatabaseError:
                # A locked or restarting database must not end the timers; the next pass retries.
                log.exception("timer pass failed")
                close_old_connections()
                busy = 0
            if not busy:
                stop.wait(interval)
