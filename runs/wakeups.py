"""Wake streams the moment rows commit, so an idle stream need not poll hard.

On PostgreSQL a trigger NOTIFYs `furrow_rows` with `<event|log>:<run id>` when events or log lines
commit (runs/migrations/0006_stream_notifications.py). One thread per web process LISTENs on its
own connection and sets the asyncio events of the streams that follow that run (or all runs).

A notification is a hint, never the data: streams still read their rows by cursor, so a lost
notification costs latency, not rows. While the listener is not connected (SQLite, a dropped
connection) streams poll every STREAM_POLL as before; while it is, an idle stream looks only every
STREAM_IDLE_POLL, and a stream that was active moments ago keeps the short poll for a while, which
covers rows held back below a rolled-back id (runs/frontier.py), whose commit sends no notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.db import connections

log = logging.getLogger(__name__)

CHANNEL = "furrow_rows"
RECONNECT_DELAY = 1.0
# Options in Django's OPTIONS that are not libpq connection parameters.
_NOT_LIBPQ = {"pool", "isolation_level", "server_side_binding", "assume_role", "cursor_factory"}


@dataclass(eq=False)
class Waiter:
    """One stream's doorbell. `run` None follows every run; `kinds` is a subset of event, log."""

    run: str | None
    kinds: frozenset[str]
    loop: asyncio.AbstractEventLoop
    rung: asyncio.Event = field(default_factory=asyncio.Event)
    active_at: float = field(default_factory=time.monotonic)

    def ring(self) -> None:
        self.loop.call_soon_threadsafe(self.rung.set)

    def wants(self, kind: str, run: str) -> bool:
        return kind in self.kinds and (self.run is None or self.run == run)

    def touched(self) -> None:
        """The stream just sent rows: keep looking often for a while."""
        self.active_at = time.monotonic()

    async def wait(self) -> None:
        """Until rung, or the pause this stream's state calls for has passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.rung.wait(), self.pause())
        if self.rung.is_set():
            self.rung.clear()
            self.touched()

    def pause(self) -> float:
        fast = settings.FURROW["STREAM_POLL"]
        if not listener.listening:
            return fast
        recently = settings.FURROW["STREAM_GAP_GRACE"] + 1.0
        if time.monotonic() - self.active_at < recently:
            return fast
        return settings.FURROW["STREAM_IDLE_POLL"]


class Listener:
    """The process's LISTEN connection and the waiters it rings."""

    def __init__(self) -> None:
        self.waiters: set[Waiter] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.listening = False

    @contextlib.contextmanager
    def waiter(self, run: str | None, kinds: tuple[str, ...]) -> Iterator[Waiter]:
        # The trigger sends a run id as PostgreSQL prints a uuid; a filter may spell it otherwise.
        with contextlib.suppress(ValueError):
            run = str(uuid.UUID(run)) if run else None
        waiter = Waiter(run=run, kinds=frozenset(kinds), loop=asyncio.get_running_loop())
        with self.lock:
            self.waiters.add(waiter)
            self._start()
        try:
            yield waiter
        finally:
            with self.lock:
                self.waiters.discard(waiter)

    def _start(self) -> None:
        if self.thread is not None or connections["default"].vendor != "postgresql":
            return
        self.thread = threading.Thread(target=self._run, name="furrow-wakeups", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Runs while some stream waits, so an idle web process holds no extra connection.
        while self._wanted():
            try:
                self._listen()
            except Exception:
                log.warning("stream wake-ups: listener lost its connection", exc_info=True)
                self.listening = False
                self.ring_all()  # back to short polls at once
                time.sleep(RECONNECT_DELAY)
        self.listening = False

    def _wanted(self) -> bool:
        with self.lock:
            if not self.waiters:
                self.thread = None
            return self.thread is not None

    def _listen(self) -> None:
        with psycopg.connect(**connection_params(), autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening = True
            self.ring_all()  # whatever committed while nobody listened
            while True:
                for note in conn.notifies(timeout=1.0):
                    kind, _, run = note.payload.partition(":")
                    self.ring(kind, run)
                with self.lock:
                    if not self.waiters:
                        return

    def ring(self, kind: str, run: str) -> None:
        with self.lock:
            due = [w for w in self.waiters if w.wants(kind, run)]
        for waiter in due:
            waiter.ring()

    def ring_all(self) -> None:
        with self.lock:
            due = list(self.waiters)
        for waiter in due:
            waiter.ring()


def connection_params() -> dict[str, object]:
    """libpq parameters of the default database, for a connection outside Django's pool."""
    conf = connections["default"].settings_dict
    params: dict[str, object] = {
        "dbname": conf["NAME"],
        "user": conf["USER"] or None,
        "password": conf["PASSWORD"] or None,
        "host": conf["HOST"] or None,
        "port": conf["PORT"] or None,
    }
    params |= {k: v for k, v in conf.get("OPTIONS", {}).items() if k not in _NOT_LIBPQ}
    return {k: v for k, v in params.items() if v is not None}


listener = Listener()
