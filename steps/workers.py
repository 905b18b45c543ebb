"""The worker registry (Strøm's `worker` table): who serves which queues, with what capacity.

A launcher (`manage.py worker`, or `serve` for its own cluster) registers when it starts its
Django-Q2 clusters, heartbeats while one of them is alive, and marks itself stopped on a clean
shutdown. Its state (alive, stale, gone) is the heartbeat's age (steps.worker_rules.state_of);
its load is the steps running now whose StepRun.worker names it (`<name>/<host>:<pid>`).
Only this module writes WorkerCluster rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from flows.language.spec import DEFAULT_QUEUE
from runs.engine.states import StepStatus
from runs.models import StepRun
from steps.models import WorkerCluster
from steps.worker_rules import WorkerState, check_queue, check_worker_name, state_of

log = logging.getLogger(__name__)


class WorkerNameTaken(Exception):
    """Another live process already registered under this name."""


def register(
    name: str, *, host: str, pid: int, queues: Sequence[str], capacity: int
) -> WorkerCluster:
    """Register (or re-register after a restart) the cluster launcher `name`.

    Raises ValueError for a bad name or queue, and WorkerNameTaken when a different process
    registered the name and is not yet gone: two launchers must not share a name.
    """
    check_worker_name(name)
    for queue in queues:
        check_queue(queue)
    now = timezone.now()
    current = WorkerCluster.objects.filter(name=name).first()
    if (
        current is not None
        and (current.host, current.pid) != (host, pid)
        and state(current, now) != WorkerState.GONE
    ):
        raise WorkerNameTaken(
            f"worker {name!r} is registered by pid {current.pid} on {current.host} and "
            "has not stopped; give this one another name"
        )
    row, _ = WorkerCluster.objects.update_or_create(
        name=name,
        defaults={
            "host": host,
            "pid": pid,
            "pids": [],
            "queues": list(queues),
            "capacity": capacity,
            "started_at": now,
            "last_heartbeat": now,
            "stopped_at": None,
        },
    )
    return row


def beat(name: str, pids: Sequence[int]) -> bool:
    """Record a heartbeat (and the clusters' current pids). False when the row is gone (deleted
    in the admin, say) or was stopped: the caller registers again."""
    return bool(
        WorkerCluster.objects.filter(name=name, stopped_at__isnull=True).update(
            last_heartbeat=timezone.now(), pids=list(pids)
        )
    )


def retire(name: str, pid: int) -> bool:
    """A clean shutdown: the row shows as gone at once. Only the process that registered it."""
    return bool(
        WorkerCluster.objects.filter(name=name, pid=pid, stopped_at__isnull=True).update(
            stopped_at=timezone.now()
        )
    )


def state(row: WorkerCluster, now: datetime) -> WorkerState:
    return state_of(
        row.last_heartbeat,
        now,
        stale_after=settings.FURROW["WORKER_STALE_AFTER"],
        gone_after=settings.FURROW["WORKER_GONE_AFTER"],
        stopped=row.stopped_at is not None,
    )


def in_state(queryset: QuerySet[WorkerCluster], wanted: WorkerState, now: datetime) -> QuerySet:
    """`queryset` narrowed to the rows `state` would call `wanted`, as a WHERE clause."""
    stale = now - timedelta(seconds=settings.FURROW["WORKER_STALE_AFTER"])
    gone = now - timedelta(seconds=settings.FURROW["WORKER_GONE_AFTER"])
    if wanted == WorkerState.GONE:
        return queryset.filter(Q(stopped_at__isnull=False) | Q(last_heartbeat__lt=gone))
    running = queryset.filter(stopped_at__isnull=True)
    if wanted == WorkerState.STALE:
        return running.filter(last_heartbeat__lt=stale, last_heartbeat__gte=gone)
    return running.filter(last_heartbeat__gte=stale)


def served_queues(queues: set[str], now: datetime) -> set[str]:
    """Those of `queues` some registered worker that is not gone serves. The default queue
    always counts (`serve` runs its cluster); asking only about it costs no query."""
    served = queues & {DEFAULT_QUEUE}
    others = queues - served
    if others:
        live = WorkerCluster.objects.filter(
            stopped_at__isnull=True,
            last_heartbeat__gte=now - timedelta(seconds=settings.FURROW["WORKER_GONE_AFTER"]),
        )
        served |= others & {queue for row in live.values_list("queues", flat=True) for queue in row}
    return served


def with_load(queryset: QuerySet[WorkerCluster]) -> QuerySet[WorkerCluster]:
    """Each row annotated with `load`: its steps running now, counted in the same statement."""
    running = (
        StepRun.objects.filter(
            status=StepStatus.RUNNING, worker__startswith=Concat(OuterRef("name"), Value("/"))
        )
        .order_by()
        .annotate(one=Value(1))
        .values("one")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(
        load=Coalesce(Subquery(running, output_field=IntegerField()), Value(0))
    )


class Beacon:
    """Registers a launcher and heartbeats from a thread of its own while `alive()` says one of
    its clusters runs; `stop()` marks it stopped. The thread keeps its own database connection."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        pid: int,
        queues: Sequence[str],
        capacity: int,
        alive: Callable[[], bool],
        pids: Callable[[], list[int]],
    ) -> None:
        self.name, self.host, self.pid = name, host, pid
        self.queues, self.capacity = list(queues), capacity
        self._alive, self._pids = alive, pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"beacon-{name}", daemon=True)

    def start(self) -> None:
        """Register now (raising WorkerNameTaken or ValueError), then heartbeat in the background."""
        self._register()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            retire(self.name, self.pid)
        finally:
            connection.close()

    def tick(self) -> bool:
        """One heartbeat, if a cluster is alive; re-registers a row that vanished. Returns
        whether a heartbeat was recorded."""
        if not self._alive():
            return False
        if beat(self.name, self._pids()):
            return True
        self._register()
        return True

    def _register(self) -> None:
        register(
            self.name, host=self.host, pid=self.pid, queues=self.queues, capacity=self.capacity
        )

    def _loop(self) -> None:
        try:
            while not self._stop.wait(settings.FURROW["WORKER_HEARTBEAT"]):
                close_old_connections()
                try:
                    self.tick()
                except Exception:  # a database hiccup must not end the heartbeats for good
                    log.exception("worker %s: heartbeat failed", self.name)
        finally:
            connection.close()
