"""Worker queues and the registry's liveness rule. Plain Python: no Django.

A queue is served by Django-Q2 clusters whose `cluster_name` is derived from it; every cluster of
one site keeps the same Q_CLUSTER `name` (Django-Q2 signs payloads with it), so the queue only
changes the broker list a cluster reads (`OrmQ.key` for the ORM broker, `django_q:<name>:q` in
Redis). `steps.workers` stores the registry rows; `state_of` decides what a row's heartbeat means.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from flows.language.schema import QUEUE_PATTERN
from flows.language.spec import DEFAULT_QUEUE

WORKER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$"
"""A cluster's registry name; no '/', which separates it from host:pid in StepRun.worker."""


class WorkerState(StrEnum):
    ALIVE = "alive"
    """Heartbeat within the stale threshold."""
    STALE = "stale"
    """Heartbeat late: busy, partitioned or dying; its steps keep their leases for now."""
    GONE = "gone"
    """Stopped cleanly, or silent for so long that it is presumed dead."""


def state_of(
    last_heartbeat: datetime,
    now: datetime,
    *,
    stale_after: float,
    gone_after: float,
    stopped: bool = False,
) -> WorkerState:
    """A cluster's state from its heartbeat's age in seconds; a clean stop is gone at once."""
    if stopped:
        return WorkerState.GONE
    age = (now - last_heartbeat).total_seconds()
    if age > gone_after:
        return WorkerState.GONE
    if age > stale_after:
        return WorkerState.STALE
    return WorkerState.ALIVE


def cluster_name(queue: str, site: str) -> str:
    """The Django-Q2 cluster (broker list) serving `queue`: the site's own name for the default
    queue, so a deployment without queues reads the list it always read."""
    return site if queue == DEFAULT_QUEUE else f"{site}.{queue}"


def check_queue(queue: str) -> str:
    """`queue` if it is a valid queue name; else ValueError saying what one looks like."""
    if not re.fullmatch(QUEUE_PATTERN, queue):
        raise ValueError(
            f"{queue!r} is not a valid queue name (lowercase letters, digits, '_' and '-'; "
            "starting with a letter; at most 50 characters)"
        )
    return queue


def check_worker_name(name: str) -> str:
    if not re.fullmatch(WORKER_NAME_PATTERN, name):
        raise ValueError(
            f"{name!r} is not a valid worker name (letters, digits, '_', '.', '@', ':' and '-'; "
            "at most 100 characters)"
        )
    return name


def step_worker(cluster: str | None, host: str, pid: int) -> str:
    """What StepRun.worker records: `<cluster>/<host>:<pid>` in a registered cluster, else
    `<host>:<pid>`. The host:pid part is what finds a step's processes on its machine."""
    local = f"{host}:{pid}"
    return f"{cluster}/{local}" if cluster else local


def host_of(worker: str) -> str:
    """The host part of a StepRun.worker value, with or without its cluster prefix."""
    return worker.rpartition("/")[2].rpartition(":")[0]
