"""Operations endpoints: `/ready` (readiness probe) and `/metrics` (Prometheus text).

Both answer without a session or API token, like `/health`; `/metrics` asks for a bearer token
when `FURROW["METRICS_TOKEN"]` is set. README.md, Operations.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.status import Stat
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from redis.backoff import NoBackoff
from redis.retry import Retry

from runs.metrics import RunsCollector

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
"""Seconds a readiness check (and the cluster stats of a scrape) may take. Orchestrators probe
every few seconds and give up after a few more: a probe that hangs is as bad as one that fails."""


@require_safe
def ready(request: HttpRequest) -> JsonResponse:
    checks = run_checks({"database": check_database, "broker": check_broker}, CHECK_TIMEOUT)
    ok = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.FURROW["METRICS_TOKEN"]
    if token and not _bearer_matches(request, token):
        response = JsonResponse({"message": "a metrics token is required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(REGISTRY), content_type=content_type)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


# Readiness


def run_checks(checks: Mapping[str, Callable[[], None]], timeout: float) -> dict[str, str]:
    """Run the checks at once, each on a thread of its own, and wait at most `timeout` seconds
    for all of them. Returns "ok" or the error text by name; a check still going is reported as
    such and left to finish on its own (its thread is a daemon).

    A thread is the only bound that holds for every way of hanging: a database host that drops
    packets keeps a connect waiting for the kernel's TCP timeout, minutes, unless its URL happens
    to carry `connect_timeout`.
    """
    results: dict[str, str] = {}
    threads = [
        threading.Thread(
            target=_record, args=(name, check, results), daemon=True, name=f"ready-{name}"
        )
        for name, check in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, f"no answer within {timeout:g}s") for name in checks}


def _record(name: str, check: Callable[[], None], results: dict[str, str]) -> None:
    try:
        check()
    except Exception as exc:  # whatever went wrong is the answer, not a reason to fail the probe
        results[name] = f"{type(exc).__name__}: {exc}".strip()[:500]
    else:
        results[name] = "ok"
    finally:
        connections.close_all()  # this thread's; a pooled connection goes back to its pool


def check_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    with broker_connection() as broker:
        if isinstance(broker, ORM):
            # The ORM broker's ping() is always True; reading its table is the real check.
            broker.connection.exists()
        elif not broker.ping():
            raise ConnectionError(f"{broker.info()} did not answer the ping")


@contextmanager
def broker_connection() -> Iterator[Broker]:
    """Django-Q2's broker, with a bounded Redis connection that is closed afterwards.

    Django-Q2 makes its Redis client without timeouts, and redis-py retries a failed command
    three times: a dead server would hold the caller far longer than CHECK_TIMEOUT.
    """
    broker = get_broker()
    client = broker.connection if isinstance(broker, Redis) else None
    if client is not None:
        client.get_connection_kwargs().update(
            socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
        )
        client.set_retry(Retry(NoBackoff(), 0))
    try:
        yield broker
    finally:
        if client is not None:
            client.close()


# Metrics


class ClusterCollector:
    """Django-Q2 clusters as their own heartbeats report them (every cluster saves its stats for
    3 seconds, again and again).

    Only with the Redis broker: the ORM broker keeps these stats in Django's cache, which here is
    each process's own memory, so a web process would never see a worker's.
    """

    def collect(self) -> Iterator[Metric]:
        try:
            with broker_connection() as broker:
                if not isinstance(broker, Redis):
                    return
                stats = Stat.get_all(broker)
        except redis.RedisError as exc:  # the scrape still reports what the database knows
            logger.warning("metrics: no Django-Q2 cluster stats from Redis: %s", exc)
            return
        clusters = Counter(stat.host for stat in stats)
        workers: Counter[str] = Counter()
        for stat in stats:
            workers[stat.host] += len(stat.workers)
        yield _by_host("furrow_qclusters", "Django-Q2 clusters alive, by host.", clusters)
        yield _by_host(
            "furrow_qcluster_workers", "Worker processes of those clusters, by host.", workers
        )


def _by_host(name: str, documentation: str, values: Counter[str]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["host"])
    for host, value in sorted(values.items()):
        family.add_metric([host], value)
    return family


# A registry of our own: the default one would add this process's Python and GC metrics, which
# say nothing about Furrow and differ with whichever process answered.
REGISTRY = CollectorRegistry()
REGISTRY.register(RunsCollector())
REGISTRY.register(ClusterCollector())
