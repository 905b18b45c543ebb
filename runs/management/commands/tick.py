"""The timer loop: promotes due retries, wakes waiting steps, reaps lost leases, re-sends lost
queue messages; a second thread probes health targets, a third delivers outbound event hooks and
a fourth fires triggers (cron schedules, workflow completions), so a slow probe, hook endpoint or
trigger never delays a timer."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from flows import triggers
from runs import hooks
from runs.timers import tick
from steps.health import probe_due

log = logging.getLogger(__name__)

TRIGGER_INTERVAL = 0.5


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
        prober = threading.Thread(
            target=_probe_loop, args=(stop,), name="furrow-health", daemon=True
        )
        prober.start()
        hook_sender = threading.Thread(
            target=_hook_loop, args=(stop,), name="furrow-hooks", daemon=True
        )
        hook_sender.start()
        trigger_loop = threading.Thread(
            target=_trigger_loop, args=(stop,), name="furrow-triggers", daemon=True
        )
        trigger_loop.start()
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


def _probe_loop(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            probe_due(timezone.now())
        except Exception:  # probing must never end the loop; probe_due logs its own failures
            log.exception("health probe pass failed")
            close_old_connections()
        stop.wait(1.0)


def _hook_loop(stop: threading.Event) -> None:
    try:
        hooks.sync_settings_endpoints()
    except Exception:  # a bad FURROW_HOOKS must not stop delivery to the admin's endpoints
        log.exception("syncing FURROW_HOOKS failed")
        close_old_connections()
    while not stop.is_set():
        try:
            busy = hooks.hook_pass(timezone.now())
        except Exception:  # delivering must never end the loop; the next pass retries
            log.exception("hook delivery pass failed")
            close_old_connections()
            busy = 0
        if not busy:
            stop.wait(settings.FURROW["HOOK_POLL"])


def _trigger_loop(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            now = timezone.now()
            triggers.fire_due_schedules(now)
            triggers.fire_after_runs(now)
        except Exception:  # firing must never end the loop; keys make the retry start nothing twice
            log.exception("trigger pass failed")
            close_old_connections()
        stop.wait(TRIGGER_INTERVAL)
