"""What `/metrics` says about runs, steps, queues, workers, approvals and dead letters
(README.md, Operations).

Everything is read from the database at scrape time: web processes, workers and the tick loop
all change these rows, so no single process could keep the numbers in memory. A scrape costs
`QUERIES` statements however many runs there are; every count is a GROUP BY or an aggregate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from flows.language.spec import DEFAULT_QUEUE
from runs.engine.states import STEP_FINAL, RunStatus, StepStatus
from runs.models import Approval, DeadLetter, Event, Run, StepRun
from steps import workers
from steps.models import WorkerCluster
from steps.worker_rules import WorkerState

# Upper bounds in seconds. Steps range from a noop (milliseconds) to an approval or a delay
# (hours), so the buckets span both; the last one is a day.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)

QUERIES = 7
"""SQL statements per `read_snapshot`; tests/integration/test_ops_endpoints.py holds us to it."""


@dataclass(frozen=True)
class Durations:
    """One histogram series: cumulative counts per bound of DURATION_BUCKETS, then all of them."""

    buckets: tuple[int, ...]
    count: int
    sum: float


@dataclass(frozen=True)
class Snapshot:
    """The numbers of one scrape. Status mappings hold every status, zero included, so a series
    never vanishes when nothing is in that status."""

    runs: Mapping[str, int]
    steps: Mapping[str, int]
    oldest_ready_age: float
    """Seconds since the oldest ready step became ready; 0 when none is."""
    durations: Mapping[tuple[str, str], Durations]
    """By (step type, final status)."""
    pending_approvals: int
    open_dead_letters: int
    ready_by_queue: Mapping[str, int] = field(default_factory=dict)
    """Ready steps by queue; every queue that has a step or a live worker, zero included."""
    workers: Mapping[str, int] = field(default_factory=dict)
    """Registered worker clusters by state (alive, stale, gone), zero included."""
    live_workers: tuple[WorkerSample, ...] = ()
    """Workers not gone: a gone one's series end rather than linger."""


@dataclass(frozen=True)
class WorkerSample:
    name: str
    queues: tuple[str, ...]
    capacity: int
    load: int
    heartbeat_age: float


def read_snapshot(now: datetime) -> Snapshot:
    """Read every number `/metrics` reports, in `QUERIES` statements."""
    steps, ready_by_queue = _steps_by_status_and_queue()
    by_state, live = _workers(now)
    for sample in live:
        for queue in sample.queues:
            ready_by_queue.setdefault(queue, 0)
    return Snapshot(
        runs=_by_status(Run.objects.all(), RunStatus),
        steps=steps,
        oldest_ready_age=_oldest_ready_age(now),
        durations=_durations(),
        pending_approvals=Approval.objects.filter(status="pending").count(),
        open_dead_letters=DeadLetter.objects.filter(status="open").count(),
        ready_by_queue=ready_by_queue,
        workers=by_state,
        live_workers=live,
    )


def _steps_by_status_and_queue() -> tuple[dict[str, int], dict[str, int]]:
    """Steps by status, and ready steps by queue, from one GROUP BY."""
    rows = StepRun.objects.order_by().values_list("status", "queue").annotate(n=Count("pk"))
    by_status = dict.fromkeys((status.value for status in StepStatus), 0)
    ready: dict[str, int] = {DEFAULT_QUEUE: 0}
    for status, queue, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        ready.setdefault(queue, 0)
        if status == StepStatus.READY:
            ready[queue] += count
    return by_status, ready


def _workers(now: datetime) -> tuple[dict[str, int], tuple[WorkerSample, ...]]:
    """Worker clusters by state, and the live ones with their load, in one statement."""
    by_state = dict.fromkeys((state.value for state in WorkerState), 0)
    live = []
    for row in workers.with_load(WorkerCluster.objects.order_by("name")):
        state = workers.state(row, now)
        by_state[state] += 1
        if state != WorkerState.GONE:
            age = max(0.0, (now - row.last_heartbeat).total_seconds())
            live.append(WorkerSample(row.name, tuple(row.queues), row.capacity, row.load, age))
    return by_state, tuple(live)


def _by_status(
    queryset: QuerySet[Any], statuses: type[RunStatus] | type[StepStatus]
) -> dict[str, int]:
    counts = dict(queryset.order_by().values_list("status").annotate(n=Count("pk")))
    return {status.value: counts.get(status.value, 0) for status in statuses}


def _oldest_ready_age(now: datetime) -> float:
    # The step.ready event of its current attempt says when a step became ready; `dispatched_at`
    # would not do: the tick loop refreshes it each time it resends a message nobody took, so a
    # queue without workers would never look older than REDISPATCH_AFTER.
    became_ready = (
        Event.objects.filter(step_run=OuterRef("pk"), type="step.ready")
        .order_by("-id")
        .values("created_at")[:1]
    )
    oldest = (
        StepRun.objects.filter(status=StepStatus.READY)
        .annotate(
            since=Coalesce(Subquery(became_ready), "dispatched_at", output_field=DateTimeField())
        )
        .aggregate(oldest=Min("since"))["oldest"]
    )
    return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


def _durations() -> dict[tuple[str, str], Durations]:
    """Step rows that ended after a worker took them (a `when` that was false skips a claimed
    step too), from the start of their last attempt to the end.

    One GROUP BY with a conditional count per bucket: the rows never leave the database.
    """
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bounds = {
        f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(DURATION_BUCKETS)
    }
    rows = (
        StepRun.objects.filter(
            status__in=STEP_FINAL, started_at__isnull=False, finished_at__isnull=False
        )
        .alias(duration=duration)
        .order_by()
        .values("type", "status")
        .annotate(count=Count("pk"), total=Sum("duration"), **bounds)
    )
    return {
        (row["type"], row["status"]): Durations(
            buckets=tuple(row[name] for name in bounds),
            count=row["count"],
            sum=row["total"].total_seconds() if row["total"] is not None else 0.0,
        )
        for row in rows
    }


class RunsCollector:
    """A prometheus_client collector: each scrape reads a fresh snapshot."""

    def __init__(self, clock: Callable[[], datetime] = timezone.now) -> None:
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from families(read_snapshot(self.clock()))


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot; README.md, Operations lists them."""
    yield _gauge("furrow_runs", "Runs by status.", "status", snapshot.runs)
    yield GaugeMetricFamily(
        "furrow_runs_queued",
        "Runs waiting for admission (max_runs or a paused workflow).",
        value=snapshot.runs[RunStatus.QUEUED],
    )
    yield _gauge(
        "furrow_steps", "Step rows by status, for_each items included.", "status", snapshot.steps
    )
    yield GaugeMetricFamily(
        "furrow_queue_depth",
        "Steps ready and waiting for a worker (also those held by a paused run).",
        value=snapshot.steps[StepStatus.READY],
    )
    yield _gauge(
        "furrow_queue_ready",
        "Steps ready and waiting for a worker, by queue.",
        "queue",
        snapshot.ready_by_queue,
    )
    yield from _worker_families(snapshot)
    yield GaugeMetricFamily(
        "furrow_queue_oldest_age_seconds",
        "Seconds since the oldest ready step became ready; 0 when none is.",
        value=snapshot.oldest_ready_age,
    )
    yield _histogram(snapshot.durations)
    yield GaugeMetricFamily(
        "furrow_approvals_pending",
        "Approvals waiting for a decision.",
        value=snapshot.pending_approvals,
    )
    yield GaugeMetricFamily(
        "furrow_dead_letters_open",
        "Dead letters nobody has requeued or discarded yet.",
        value=snapshot.open_dead_letters,
    )


def _worker_families(snapshot: Snapshot) -> Iterator[Metric]:
    yield _gauge(
        "furrow_workers", "Registered worker clusters by state.", "state", snapshot.workers
    )
    capacity = GaugeMetricFamily(
        "furrow_worker_capacity", "Steps a live worker can run at once.", labels=["worker"]
    )
    load = GaugeMetricFamily(
        "furrow_worker_load", "Steps a live worker runs now.", labels=["worker"]
    )
    age = GaugeMetricFamily(
        "furrow_worker_heartbeat_age_seconds",
        "Seconds since a live worker's last heartbeat.",
        labels=["worker"],
    )
    by_queue = dict.fromkeys(snapshot.ready_by_queue, 0.0)
    for sample in snapshot.live_workers:
        capacity.add_metric([sample.name], sample.capacity)
        load.add_metric([sample.name], sample.load)
        age.add_metric([sample.name], sample.heartbeat_age)
        for queue in sample.queues:  # a worker's capacity is split evenly over its queues
            by_queue[queue] = by_queue.get(queue, 0.0) + sample.capacity / len(sample.queues)
    yield capacity
    yield load
    yield age
    yield _gauge(
        "furrow_queue_capacity",
        "Steps the live workers of a queue can run at once; 0: nothing will run its steps.",
        "queue",
        by_queue,
    )


def _gauge(name: str, documentation: str, label: str, values: Mapping[str, float]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _histogram(durations: Mapping[tuple[str, str], Durations]) -> Metric:
    family = HistogramMetricFamily(
        "furrow_step_duration_seconds",
        "Duration of the last attempt of steps that ended after a worker took them.",
        labels=["type", "status"],
    )
    bounds = [floatToGoString(bound) for bound in DURATION_BUCKETS]
    for (step_type, status), series in sorted(durations.items()):
        buckets = [*zip(bounds, series.buckets, strict=True), ("+Inf", series.count)]
        family.add_metric([step_type, status], buckets, series.sum)
    return family
