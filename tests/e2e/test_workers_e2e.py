"""Queues through real processes: `serve` runs the default queue, `manage.py worker --queue
special` beside it runs the step that asks for "special", and both show in the workers API."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from runs.models import StepRun
from steps.models import WorkerCluster
from tests.e2e.conftest import STOP_TIMEOUT, Launcher
from tests.e2e.conftest import test_database_url as database_url
from tests.e2e.test_end_to_end import wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORKFLOW = """
name: e2e-queues
steps:
  fetch:
    type: shell
    run: 'echo "OUTPUT: {\\"pid\\": $PPID}"'
  draw:
    type: shell
    needs: [fetch]
    queue: special
    run: 'echo "OUTPUT: {\\"pid\\": $PPID}"'
  store:
    type: shell
    needs: [draw]
    run: 'echo "OUTPUT: {\\"pid\\": $PPID}"'
"""

FAST = {"FURROW_WORKER_HEARTBEAT": "0.3", "FURROW_BROKER_POLL": "0.02"}


@pytest.fixture
def special_worker(launcher: Launcher, tmp_path: Path) -> Iterator[Callable[[], int]]:
    """Start `manage.py worker --queue special` against the test database; returns a function
    that stops it with SIGTERM, as an operator would, and gives its exit code."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(settings.BASE_DIR / "manage.py"),
                "worker",
                "--queue",
                "special",
                "--capacity",
                "1",
                "--name",
                "special-e2e",
            ],
            env={**os.environ, "DATABASE_URL": database_url(), **FAST},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop() -> int:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"worker did not stop:\n{log_path.read_text()}") from None

    try:
        yield stop
    finally:
        if proc.poll() is None:
            stop()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def workers_by_name(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    return {row["name"]: row for row in response.json()["results"]}


def test_a_step_on_a_queue_runs_on_that_queues_worker_and_the_rest_on_the_default_one(
    launcher, launcher_client_for, special_worker, alice
):
    launcher.start(**FAST)
    client = launcher_client_for(alice)
    default_name = f"default@{socket.gethostname()}"
    listed = wait_for(
        lambda: (rows := workers_by_name(client)).keys() >= {default_name, "special-e2e"} and rows,
        "both workers to register",
    )
    assert listed["special-e2e"]["queues"] == ["special"]
    assert listed["special-e2e"]["capacity"] == 1
    assert listed[default_name]["queues"] == ["default"]
    assert listed[default_name]["capacity"] == 2  # FURROW_WORKERS in the launcher fixture

    published = client.post(
        "/api/v1/workflows", content=WORKFLOW, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code == 201, published.text
    started = client.post("/api/v1/workflows/e2e-queues/runs", json={"input": {}})
    assert started.status_code == 201, started.text
    run = wait_final(client, started.json()["id"])
    assert run["status"] == "succeeded", run

    ran_by = dict(StepRun.objects.filter(run_id=run["id"]).values_list("name", "worker"))
    assert ran_by["draw"].startswith("special-e2e/"), ran_by
    assert ran_by["fetch"].startswith(f"{default_name}/"), ran_by
    assert ran_by["store"].startswith(f"{default_name}/"), ran_by

    # Both heartbeat: each one's last heartbeat moves on, and both are alive.
    before = workers_by_name(client)
    wait_for(
        lambda: all(
            row["last_heartbeat"] > before[name]["last_heartbeat"]
            for name, row in workers_by_name(client).items()
            if name in (default_name, "special-e2e")
        ),
        "a newer heartbeat from both",
    )
    rows = workers_by_name(client)
    assert rows["special-e2e"]["state"] == rows[default_name]["state"] == "alive"
    assert rows["special-e2e"]["pids"], rows["special-e2e"]

    # A clean stop marks the special worker gone at once; the default one stays alive.
    assert special_worker() == 0
    row = WorkerCluster.objects.get(name="special-e2e")
    assert row.stopped_at is not None
    rows = workers_by_name(client)
    assert rows["special-e2e"]["state"] == "gone"
    assert rows[default_name]["state"] == "alive"
