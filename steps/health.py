"""Health checks of targets (Spuds): connectors with a `health_url`, and http steps whose `with`
has `health_check`. The tick loop calls `probe_due`; the guard reads the result.

Every FURROW_HEALTH_INTERVAL each target gets a GET (FURROW_HEALTH_TIMEOUT): a status of 400 or
more is unhealthy ("HTTP 503"), so is a connection error (its text); anything else is healthy.
A step that called the target successfully within the last interval makes it healthy without a
probe. A `target.health_changed` event is recorded only when the status changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from runs.models import Event
from steps.connectors import all_connectors
from steps.executors.http import HttpRequest, url_error
from steps.models import Connector, HealthStatus, TargetHealth
from steps.resilience_rules import connector_target_key

log = logging.getLogger(__name__)

POOL_SIZE = 8
"""Targets probed at once, and so at most per call of probe_due: one round fits the timeout."""

Outcome = tuple[str, str]
"""(status, error) of one check."""

_next_sync = 0.0  # monotonic time of the next connector sync in this process


def interval() -> float:
    return float(settings.FURROW.get("HEALTH_INTERVAL", 30.0))


def timeout() -> float:
    return float(settings.FURROW.get("HEALTH_TIMEOUT", 3.0))


def probe_due(now: datetime) -> int:
    """Check the targets whose time has come, at most POOL_SIZE of them, concurrently.

    Returns how many were checked. Never raises (it logs), and returns within about the health
    timeout plus half a second: a probe that has not answered by then counts as unhealthy and
    its thread is left to finish on its own.
    """
    try:
        _sync_if_due(now)
        targets = _claim_due(now)
        if targets:
            _apply_all(targets, _outcomes(targets, now, skip_recent=True), now)
        return len(targets)
    except Exception:
        log.exception("health checks failed; trying again on the next tick")
        return 0


def check_now(keys: Iterable[str], now: datetime) -> list[TargetHealth]:
    """Probe these targets at once, whatever their schedule (the admin's "check health now")."""
    targets = list(TargetHealth.objects.filter(key__in=list(keys)))
    for start in range(0, len(targets), POOL_SIZE):
        batch = targets[start : start + POOL_SIZE]
        TargetHealth.objects.filter(pk__in=[t.pk for t in batch]).update(
            next_check_at=now + timedelta(seconds=interval())
        )
        _apply_all(batch, _outcomes(batch, now, skip_recent=False), now)
    return list(TargetHealth.objects.filter(pk__in=[t.pk for t in targets]))


def register_target(key: str, url: str, now: datetime) -> TargetHealth:
    """The target `key`, created (status unknown, checked on the next pass) if it is new; a
    changed `url` replaces the old one."""
    row = TargetHealth.objects.filter(key=key).first()
    if row is None:
        try:
            with transaction.atomic():
                return TargetHealth.objects.create(key=key, url=url, next_check_at=now)
        except IntegrityError:  # registered by another worker meanwhile
            row = TargetHealth.objects.get(key=key)
    if row.url != url:
        TargetHealth.objects.filter(pk=row.pk).update(url=url, next_check_at=now)
        row.url, row.next_check_at = url, now
    return row


def mark_success(key: str, now: datetime) -> None:
    """A step called the target successfully: the next pass need not probe it."""
    TargetHealth.objects.filter(key=key).update(last_success_at=now)


def sync_connector_targets(now: datetime) -> None:
    """One target per connector with a health_url; the targets of connectors gone are dropped."""
    wanted = {
        connector_target_key(spec.name): spec.health_url
        for spec in all_connectors().values()
        if spec.health_url
    }
    for key, url in wanted.items():
        register_target(key, url, now)
    stale = TargetHealth.objects.filter(key__startswith="connector:").exclude(key__in=wanted)
    stale.delete()


def _sync_if_due(now: datetime) -> None:
    global _next_sync
    if time.monotonic() >= _next_sync:
        _next_sync = time.monotonic() + interval()
        sync_connector_targets(now)


@receiver([post_save, post_delete], sender=Connector)
def _connector_changed(**kwargs: Any) -> None:
    global _next_sync
    _next_sync = 0.0  # so a new or changed health_url is registered on the next pass


def _claim_due(now: datetime) -> list[TargetHealth]:
    """Take the due targets and move their next check one interval on, so another tick loop
    (another machine) does not probe them too. SKIP LOCKED on PostgreSQL; SQLite's IMMEDIATE
    transaction serialises the claim instead."""
    due = TargetHealth.objects.filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
    if not due.exists():  # the common case, without taking SQLite's write lock every tick
        return []
    with transaction.atomic():
        ordered = due.order_by(F("next_check_at").asc(nulls_first=True), "pk")
        targets = list(ordered.select_for_update(skip_locked=True)[:POOL_SIZE])
        TargetHealth.objects.filter(pk__in=[t.pk for t in targets]).update(
            next_check_at=now + timedelta(seconds=interval())
        )
    return targets


def _outcomes(
    targets: list[TargetHealth], now: datetime, *, skip_recent: bool
) -> dict[int, Outcome]:
    recent = now - timedelta(seconds=interval())
    outcomes: dict[int, Outcome] = {}
    to_probe = []
    for target in targets:
        if skip_recent and target.last_success_at and target.last_success_at >= recent:
            outcomes[target.pk] = (HealthStatus.HEALTHY, "")
        else:
            to_probe.append(target)
    return outcomes | _probe_all(to_probe)


def _probe_all(targets: list[TargetHealth]) -> dict[int, Outcome]:
    if not targets:
        return {}
    limit = timeout()
    pool = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="furrow-health")
    futures = {pool.submit(probe, target.url, limit): target.pk for target in targets}
    done, _ = wait(futures, timeout=limit + 0.5)
    pool.shutdown(wait=False, cancel_futures=True)
    late: Outcome = (HealthStatus.UNHEALTHY, f"no answer within {limit:g}s")
    return {pk: future.result() if future in done else late for future, pk in futures.items()}


def probe(url: str, limit: float) -> Outcome:
    """GET `url`: healthy below 400, else "HTTP <status>"; the error text when there is no
    answer. Never raises."""
    if problem := url_error(url):
        return HealthStatus.UNHEALTHY, problem
    try:
        result = HttpRequest({"url": url, "method": "GET"}, limit, _no_log).send()
    except Exception as exc:  # a probe must not take the tick loop down
        return HealthStatus.UNHEALTHY, f"{type(exc).__name__}: {exc}"
    status = (result.output or {}).get("status")
    if not isinstance(status, int):
        return HealthStatus.UNHEALTHY, result.error or "no response"
    if status >= 400:
        return HealthStatus.UNHEALTHY, f"HTTP {status}"
    return HealthStatus.HEALTHY, ""


def _no_log(stream: str, text: str) -> None:
    pass


def _apply_all(targets: list[TargetHealth], outcomes: dict[int, Outcome], now: datetime) -> None:
    for target in targets:
        status, error = outcomes[target.pk]
        _apply(target, status, error, now)


def _apply(target: TargetHealth, status: str, error: str, now: datetime) -> None:
    rows = TargetHealth.objects.filter(pk=target.pk)
    if status == target.status:
        rows.update(error=error, checked_at=now)
        return
    with transaction.atomic():
        # Conditional on the status we read, so two probers cannot both record the change.
        if rows.filter(status=target.status).update(status=status, error=error, checked_at=now):
            Event.objects.create(
                type="target.health_changed",
                data={"key": target.key, "status": status, "error": error},
            )
