"""Batching log writer: executors call it per line from any thread; rows are written in batches."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from runs import services
from runs.models import StepRun


class LogWriter:
    """Collects (stream, text) lines and writes them every LOG_FLUSH_SECONDS or LOG_BATCH_LINES.

    Lines reach the database while the step runs, not at its end. The flusher thread is started
    on the first line, so steps that log nothing cost nothing.
    """

    def __init__(
        self,
        step: StepRun,
        attempt: int,
        *,
        mask: Callable[[str], str] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.step = step
        self._mask = mask
        self._cancel = cancel
        self.attempt = attempt
        self._lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch = settings.FURROW["LOG_BATCH_LINES"]
        self._per_transaction = max(self._batch, settings.FURROW["LOG_TRANSACTION_LINES"])
        self._interval = settings.FURROW["LOG_FLUSH_SECONDS"]

    def __call__(self, stream: str, text: str) -> None:
        if self._mask is not None:
            text = self._mask(text)
        with self._lock:
            self._lines.append((stream, text))
            full = len(self._lines) >= self._batch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="furrow-log-flush", daemon=True
                )
                self._thread.start()
        if full:
            self._wake.set()

    def close(self) -> None:
        """Stop the flusher and write what is left, from the calling thread."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._flush()

    def _loop(self) -> None:
        try:
            while not self._closed.is_set():
                self._wake.wait(self._interval)
                self._wake.clear()
                if not self._closed.is_set():
                    self._flush()
        finally:
            connection.close()  # this thread's own connection

    def _flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        # Bounded transactions: a burst of 100,000 lines in one would hold the step's row (and
        # its lease renewal) long enough for the sweeper to declare a live attempt lost, while a
        # transaction per 200 lines made the commits, not the inserts, the limit on PostgreSQL.
        size = self._per_transaction
        for start in range(0, len(lines), size):
            if not services.append_logs(self.step, self.attempt, lines[start : start + size]):
                if self._cancel:
                    self._cancel.set()  # the attempt is no longer current: its lines are refused
                return
