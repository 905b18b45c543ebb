"""Operations endpoints: the readiness probe `/ready` and the Prometheus text at `/metrics`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.ops import CHECK_TIMEOUT, broker_connection
from runs import metrics, services
from runs.models import Event, Run, StepRun
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any, **headers: str) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for (sample, key), v in samples.items() if sample == name}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def redis_broker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point Django-Q2 at a Redis URL, as REDIS_URL does (its settings are read at import time)."""

    def _use(url: str) -> None:
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "REDIS", url)

    return _use


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real, private redis-server on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.02)
    client.close()
    yield url
    process.terminate()
    process.wait(timeout=10)


# /ready


def test_ready_answers_200_when_the_database_and_the_broker_answer(client):
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_ready_answers_503_with_the_error_when_the_database_is_unreachable(
    client, monkeypatch, tmp_path
):
    # The checks open connections of their own, from these settings; the test's stays as it was.
    database = connections.settings["default"]
    if connection.vendor == "sqlite":
        monkeypatch.setitem(database, "NAME", str(tmp_path / "missing" / "furrow.sqlite3"))
    else:
        monkeypatch.setitem(database, "HOST", "127.0.0.1")
        monkeypatch.setitem(database, "PORT", str(free_port()))

    response = client.get("/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("OperationalError: ")
    if Conf.ORM:  # the ORM broker lives in the same database
        assert body["checks"]["broker"].startswith("OperationalError: ")


def test_ready_answers_503_with_the_error_when_the_broker_is_unreachable(client, redis_broker):
    port = free_port()
    redis_broker(f"redis://127.0.0.1:{port}/0")

    response = client.get("/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["broker"].startswith("ConnectionError: ")
    assert f"127.0.0.1:{port}" in checks["broker"]


def test_a_redis_that_never_answers_does_not_hold_the_probe(client, redis_broker):
    with socket.socket() as silent:  # takes connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        redis_broker(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")

        started = time.monotonic()
        response = client.get("/ready")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["broker"] != "ok"
    assert elapsed < CHECK_TIMEOUT + 1.5


def test_ready_answers_200_with_a_live_redis_broker(client, redis_broker, redis_server):
    redis_broker(redis_server)

    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


# /metrics


def test_every_status_is_listed_even_when_nothing_is_in_it(client):
    samples = scrape(client)

    assert by_label(samples, "furrow_runs", "status") == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert set(by_label(samples, "furrow_steps", "status")) == {
        "pending",
        "ready",
        "running",
        "waiting",
        "retrying",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
    }
    assert set(by_label(samples, "furrow_steps", "status").values()) == {0}
    for name in (
        "furrow_runs_queued",
        "furrow_queue_depth",
        "furrow_queue_oldest_age_seconds",
        "furrow_approvals_pending",
        "furrow_dead_letters_open",
    ):
        assert value(samples, name) == 0, name
    assert not [key for key in samples if key[0].startswith("furrow_step_duration_seconds")]


GATED = {
    "name": "gated",
    "concurrency": {"max_runs": 1},
    "steps": {
        "build": {"type": "noop"},
        "sign-off": {"type": "approval", "needs": ["build"]},
    },
}


def advance() -> None:
    """Run whatever is ready now, without waiting for any run to end."""
    while ready := list(StepRun.objects.filter(status="ready").values_list("pk", "attempt")):
        for pk, attempt in ready:
            run_attempt(pk, attempt)


@pytest.fixture
def busy(publish) -> dict[str, Run]:
    """One run in each interesting state, made through the services."""
    chain = publish(
        {"name": "chain", "steps": {"a": {"type": "noop"}, "b": {"type": "noop", "needs": ["a"]}}}
    )
    broken = publish(
        {"name": "broken", "steps": {"x": {"type": "shell", "run": "exit 3", "dead_letter": True}}}
    )
    gated = publish(GATED)
    idle = publish({"name": "idle", "steps": {"only": {"type": "noop"}}})
    runs = {
        "succeeded": drive(services.start_run(chain, {})),
        "failed": drive(services.start_run(broken, {})),
        "waiting": services.start_run(gated, {}),
    }
    advance()  # build runs; sign-off waits for a person
    runs["queued"] = services.start_run(gated, {})  # max_runs 1: waits for admission
    runs["ready"] = services.start_run(idle, {})  # its step stays ready: no worker in this test
    for run in runs.values():
        run.refresh_from_db()
    return runs


def test_metrics_count_what_the_services_did(client, busy):
    assert {name: run.status for name, run in busy.items()} == {
        "succeeded": "succeeded",
        "failed": "failed",
        "waiting": "running",
        "queued": "queued",
        "ready": "running",
    }

    samples = scrape(client)

    assert by_label(samples, "furrow_runs", "status") == {
        "queued": 1,
        "running": 2,
        "paused": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert value(samples, "furrow_runs_queued") == 1
    steps = by_label(samples, "furrow_steps", "status")
    in_db = Counter(StepRun.objects.values_list("status", flat=True))
    assert {status: n for status, n in steps.items() if n} == in_db
    assert steps["succeeded"] == 3  # a, b and build
    assert steps["failed"] == 1
    assert steps["waiting"] == 1
    assert value(samples, "furrow_queue_depth") == steps["ready"] == 1
    assert 0 <= value(samples, "furrow_queue_oldest_age_seconds") < 60
    assert value(samples, "furrow_approvals_pending") == 1
    assert value(samples, "furrow_dead_letters_open") == 1

    noop = {"type": "noop", "status": "succeeded"}
    assert value(samples, "furrow_step_duration_seconds_count", **noop) == 3
    assert value(samples, "furrow_step_duration_seconds_bucket", le="+Inf", **noop) == 3
    shell = {"type": "shell", "status": "failed"}
    assert value(samples, "furrow_step_duration_seconds_count", **shell) == 1
    finished = StepRun.objects.filter(type="noop", status="succeeded")
    expected_sum = sum((s.finished_at - s.started_at).total_seconds() for s in finished)
    assert value(samples, "furrow_step_duration_seconds_sum", **noop) == pytest.approx(
        expected_sum, abs=1e-6
    )


def test_step_durations_fall_in_cumulative_buckets_with_the_bound_included(client, publish):
    workflow = publish({"name": "three", "steps": {n: {"type": "noop"} for n in ("p", "q", "r")}})
    run = drive(services.start_run(workflow, {}))
    start = timezone.now()
    for name, seconds in {"p": 0.2, "q": 5.0, "r": 7200.0}.items():
        StepRun.objects.filter(run=run, name=name).update(
            started_at=start, finished_at=start + timedelta(seconds=seconds)
        )

    samples = scrape(client)

    labels = {"type": "noop", "status": "succeeded"}
    buckets = {
        le: n
        for (name, key), n in samples.items()
        if name == "furrow_step_duration_seconds_bucket"
        for le in [dict(key)["le"]]
    }
    assert buckets == {
        "0.01": 0,
        "0.05": 0,
        "0.1": 0,
        "0.5": 1,
        "1.0": 1,
        "5.0": 2,
        "10.0": 2,
        "30.0": 2,
        "60.0": 2,
        "300.0": 2,
        "900.0": 2,
        "3600.0": 2,
        "14400.0": 3,
        "86400.0": 3,
        "+Inf": 3,
    }
    assert value(samples, "furrow_step_duration_seconds_count", **labels) == 3
    assert value(samples, "furrow_step_duration_seconds_sum", **labels) == pytest.approx(7205.2)


def test_the_queue_age_counts_from_when_the_step_became_ready_not_from_a_resend(publish):
    workflow = publish({"name": "stuck", "steps": {"only": {"type": "noop"}}})
    run = services.start_run(workflow, {})
    step = StepRun.objects.get(run=run)
    became_ready = Event.objects.get(step_run=step, type="step.ready").created_at
    later = became_ready + timedelta(minutes=10)

    assert metrics.read_snapshot(later).oldest_ready_age == 600.0

    # The tick loop resends a message nobody took; the step has not become any younger.
    assert services.redispatch(step.pk, step.attempt, later, older_than=later)
    assert metrics.read_snapshot(later).oldest_ready_age == 600.0


def test_a_scrape_costs_the_same_few_queries_however_many_runs_there_are(client, publish):
    workflow = publish(
        {"name": "many", "steps": {"a": {"type": "noop"}, "b": {"type": "noop", "needs": ["a"]}}}
    )
    drive(services.start_run(workflow, {}))
    with CaptureQueriesContext(connection) as few:
        scrape(client)

    for _ in range(5):
        drive(services.start_run(workflow, {}))
    services.start_run(publish(GATED), {})
    advance()
    assert Run.objects.count() == 7
    with CaptureQueriesContext(connection) as many:
        scrape(client)

    assert len(few) == len(many) == metrics.QUERIES


def test_the_metrics_token_is_required_once_set(client, settings):
    settings.FURROW = {**settings.FURROW, "METRICS_TOKEN": "s3cret"}

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    other_scheme = client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret")

    for response in (missing, wrong, other_scheme):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"furrow_runs" not in response.content
    samples = scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")
    assert value(samples, "furrow_runs", status="running") == 0
    assert client.get("/ready").status_code == 200  # the probe stays open
    assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 405


def test_clusters_are_reported_from_their_redis_heartbeats(client, redis_broker, redis_server):
    redis_broker(redis_server)
    for cluster_id, host, workers in (
        ("c1", "worker-1", 4),
        ("c2", "worker-1", 2),
        ("c3", "w2", 1),
    ):
        status = Status(pid=100, cluster_id=cluster_id)
        status.host, status.workers = host, list(range(workers))
        with broker_connection() as broker:
            # What a running cluster's sentinel saves every few seconds (Stat.save).
            broker.set_stat(Stat.get_key(cluster_id), SignedPackage.dumps(status, True), 30)

    try:
        samples = scrape(client)
    finally:
        with broker_connection() as broker:
            broker.connection.flushdb()

    assert by_label(samples, "furrow_qclusters", "host") == {"worker-1": 2, "w2": 1}
    assert by_label(samples, "furrow_qcluster_workers", "host") == {"worker-1": 6, "w2": 1}


def test_without_redis_there_are_no_cluster_metrics_but_the_rest_is_reported(
    client, redis_broker, monkeypatch
):
    monkeypatch.setattr(Conf, "ORM", "default")  # its stats live in each process's own cache
    samples = scrape(client)
    assert not [key for key in samples if key[0].startswith("furrow_qcluster")]

    redis_broker(f"redis://127.0.0.1:{free_port()}/0")  # a Redis that is down
    samples = scrape(client)
    assert not [key for key in samples if key[0].startswith("furrow_qcluster")]
    assert value(samples, "furrow_runs", status="queued") == 0


def test_the_registry_has_no_process_metrics(client):
    names = {name for name, _ in scrape(client)}
    assert all(name.startswith("furrow_") for name in names), names
