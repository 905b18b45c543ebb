"""Keeps a running attempt's lease alive and notices when the attempt is no longer wanted.

While an executor runs, a thread renews the lease every FURROW["HEARTBEAT"] seconds. When the
renewal is refused (the run was cancelled, the sweeper declared the attempt lost, a newer attempt
exists), it sets the attempt's cancel event, and the executor stops: a shell step's process group
is killed. A worker killed outright renews nothing, so its lease runs out and the sweeper reaps it.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from django.conf import settings
from django.db import DatabaseError, connection

from runs import services

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, step_id: int, attempt: int, cancel: threading.Event) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.cancel = cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="furrow-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = settings.FURROW["HEARTBEAT"]
        try:
            while not self._stop.wait(interval):
                try:
                    alive = services.heartbeat(self.step_id, self.attempt)
                except DatabaseError:
                    # A busy database must not stop the step; the next beat tries again, and the
                    # lease is several beats long.
                    log.warning("heartbeat for step %s failed", self.step_id, exc_info=True)
                    continue
                if not alive:
                    self.cancel.set()
                    return
        finally:
            connection.close()  # this thread's own connection
