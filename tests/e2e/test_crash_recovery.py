"""Run control that never loses work, shown with real processes: a worker killed with SIGKILL, a
cancel that must stop a sleeping shell step, a full stop and start of the launcher between a
timer's start and its end, and a claim whose worker never existed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from runs import services
from runs.models import Event, StepRun
from tests.e2e.test_end_to_end import wait_final

pytestmark = [pytest.mark.e2e]

FAST_LEASES = {
    # A killed worker's attempt is declared lost within seconds, not the default 15.
    "FURROW_LEASE_SECONDS": "3",
    "FURROW_HEARTBEAT": "0.5",
    "FURROW_REDISPATCH_AFTER": "2",
}

KILLED = """
name: e2e-killed
input: {type: object, properties: {dir: {type: string}}, required: [dir]}
steps:
  a: {type: shell, run: sleep 0.2}
  slow:
    type: shell
    needs: [a]
    retry: {max_attempts: 2, delay: 100ms}
    env: {DIR: "{{ input.dir }}"}
    run: |
      echo "$FURROW_ATTEMPT" >> "$DIR/attempts"
      if [ "$FURROW_ATTEMPT" = 1 ]; then echo $$ > "$DIR/pid"; exec sleep 30; fi
  c: {type: noop, needs: [slow]}
"""

ORPHANED = """
name: e2e-orphaned
input: {type: object, properties: {dir: {type: string}}, required: [dir]}
steps:
  slow:
    type: shell
    env: {DIR: "{{ input.dir }}"}
    run: echo $$ > "$DIR/pid"; exec sleep 30
"""

SLEEPER = """
name: e2e-sleeper
input: {type: object, properties: {dir: {type: string}}, required: [dir]}
steps:
  nap:
    type: shell
    env: {DIR: "{{ input.dir }}"}
    run: echo $$ > "$DIR/pid"; exec sleep 60
"""

DELAYED = """
name: e2e-delayed
steps:
  pause: {type: delay, with: {for: 3s}}
  after: {type: noop, needs: [pause]}
"""

BACKOFF = """
name: e2e-backoff
steps:
  flaky:
    type: shell
    retry: {max_attempts: 2, delay: 3s}
    run: '[ "$FURROW_ATTEMPT" -ge 2 ] || exit 1'
  after: {type: noop, needs: [flaky]}
"""

GHOSTED = {
    "name": "e2e-ghosted",
    "steps": {
        "first": {"type": "noop", "retry": {"max_attempts": 2}},
        "second": {"type": "noop", "needs": ["first"]},
    },
}


def publish_over_http(client: httpx.Client, definition: str) -> None:
    published = client.post(
        "/api/v1/workflows", content=definition, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code == 201, published.text


def start_over_http(client: httpx.Client, workflow: str, input: dict[str, Any]) -> str:
    started = client.post(f"/api/v1/workflows/{workflow}/runs", json={"input": input})
    assert started.status_code == 201, started.text
    return started.json()["id"]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def read_pid(path: Path) -> int | None:
    # The shell writes "<pid>\n": a file without its newline is still being written.
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text()
        if text.endswith("\n"):
            return int(text)
    return None


def is_gone(pid: int) -> bool:
    """Exited, or a zombie (it has ended; only its parent has not collected its status yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return state.split()[1] == "Z"


def processes_of(run_id: str) -> list[int]:
    """Live processes started for `run_id`: shell steps get FURROW_RUN_ID, and their children
    inherit it, so this finds them whatever their command line became after an exec."""
    marker = f"FURROW_RUN_ID={run_id}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0") and not is_gone(
                int(environ.parent.name)
            ):
                found.append(int(environ.parent.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running_worker_pid(run_id: str, step: str) -> int | None:
    row = StepRun.objects.filter(run_id=run_id, name=step, status="running").first()
    if row is None or not row.worker:
        return None
    return int(row.worker.rsplit(":", 1)[1])


def kill_the_worker_running(run_id: str, step: str, pidfile: Path) -> tuple[int, int]:
    """SIGKILL the Django-Q2 worker process running `step` once its shell has started.

    Returns (worker pid, shell pid)."""
    worker = wait_for(lambda: running_worker_pid(run_id, step), f"{step} running on a worker")
    shell = wait_for(lambda: read_pid(pidfile), f"{step}'s shell writing its pid")
    cmdline = Path(f"/proc/{worker}/cmdline").read_bytes()
    assert b"qcluster" in cmdline, f"pid {worker} is not a cluster worker: {cmdline!r}"
    os.kill(worker, signal.SIGKILL)
    return worker, shell


def step_events(client: httpx.Client, run_id: str, step: str) -> list[tuple[str, Any, Any]]:
    events = client.get(f"/api/v1/runs/{run_id}/events").json()
    return [
        (e["type"], e["data"].get("attempt"), e["data"].get("error"))
        for e in events
        if e["step"] == step
    ]


def test_a_worker_killed_mid_step_loses_the_attempt_and_the_retry_completes_the_run(
    launcher, launcher_client_for, alice, tmp_path
):
    launcher.start(**FAST_LEASES)
    client = launcher_client_for(alice)
    publish_over_http(client, KILLED)
    run_id = start_over_http(client, "e2e-killed", {"dir": str(tmp_path)})
    try:
        worker, _ = kill_the_worker_running(run_id, "slow", tmp_path / "pid")

        run = wait_final(client, run_id, timeout=20)

        assert run["status"] == "succeeded", run
        steps = {step["name"]: step for step in run["steps"]}
        assert (steps["slow"]["status"], steps["slow"]["attempt"]) == ("succeeded", 2)
        assert steps["c"]["status"] == "succeeded"
        assert (tmp_path / "attempts").read_text() == "1\n2\n"
        host = socket.gethostname()  # the worker ran on this machine
        # A registered cluster's steps record `<registry name>/<host>:<pid>`.
        events = [
            (kind, attempt, re.sub(r"worker [^ /]+/", "worker ", error) if error else error)
            for kind, attempt, error in step_events(client, run_id, "slow")
        ]
        assert events == [
            ("step.ready", 1, None),
            ("step.running", 1, None),
            ("step.retrying", 1, f"attempt 1 lost: worker {host}:{worker} stopped answering"),
            ("step.ready", 2, None),
            ("step.running", 2, None),
            ("step.succeeded", 2, None),
        ]
        assert not StepRun.objects.get(run_id=run_id, name="slow").worker.endswith(
            f"{host}:{worker}"
        )
    finally:
        kill_all(processes_of(run_id))


def test_a_killed_workers_shell_process_does_not_outlive_its_lost_attempt(
    launcher, launcher_client_for, alice, tmp_path
):
    launcher.start(**FAST_LEASES)
    client = launcher_client_for(alice)
    publish_over_http(client, ORPHANED)
    run_id = start_over_http(client, "e2e-orphaned", {"dir": str(tmp_path)})
    try:
        _, shell = kill_the_worker_running(run_id, "slow", tmp_path / "pid")
        run = wait_final(client, run_id, timeout=20)
        assert run["status"] == "failed"
        assert "attempt 1 lost" in run["error"]
        # The sweeper that declared the attempt lost killed what its shell left running here.
        wait_for(lambda: is_gone(shell), "the lost attempt's `sleep 30` ending", timeout=3)
        assert processes_of(run_id) == []
    finally:
        kill_all(processes_of(run_id))


def test_cancelling_a_run_kills_its_sleeping_shell_step_within_seconds(
    furrow, client_for, alice, tmp_path
):
    client = client_for(alice)
    publish_over_http(client, SLEEPER)
    run_id = start_over_http(client, "e2e-sleeper", {"dir": str(tmp_path)})
    try:
        sleeper = wait_for(lambda: read_pid(tmp_path / "pid"), "the step's shell writing its pid")

        cancelled = client.post(f"/api/v1/runs/{run_id}/cancel", json={"reason": "enough"})
        began = time.monotonic()

        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        wait_for(lambda: is_gone(sleeper), "the sleeping step's process ending", timeout=5)
        assert time.monotonic() - began < 5
        run = client.get(f"/api/v1/runs/{run_id}").json()
        assert (run["status"], run["error"]) == ("cancelled", "enough")
        assert [s["status"] for s in run["steps"]] == ["cancelled"]
        # The stopped attempt's own result arrives after the cancel and is fenced out.
        time.sleep(1)
        types = [e["type"] for e in client.get(f"/api/v1/runs/{run_id}/events").json()]
        assert types[-2:] == ["step.cancelled", "run.cancelled"]
        assert StepRun.objects.get(run_id=run_id).status == "cancelled"
    finally:
        kill_all(processes_of(run_id))


def parked(run_ids: list[str]) -> dict[tuple[str, str], tuple[str, int, datetime | None]]:
    rows = StepRun.objects.filter(run_id__in=run_ids).values_list(
        "run_id", "name", "status", "attempt", "next_attempt_at"
    )
    return {(str(run), name): (status, attempt, due) for run, name, status, attempt, due in rows}


def event_time(run_id: str, step: str, type: str, attempt: int) -> datetime:
    return (
        Event.objects.filter(run_id=run_id, step_run__name=step, type=type, data__attempt=attempt)
        .values_list("created_at", flat=True)
        .get()
    )


def test_a_delay_and_a_retry_backoff_fire_after_a_full_restart(
    launcher, launcher_client_for, alice
):
    launcher.start()
    client = launcher_client_for(alice)
    publish_over_http(client, DELAYED)
    publish_over_http(client, BACKOFF)
    delayed = start_over_http(client, "e2e-delayed", {})
    backoff = start_over_http(client, "e2e-backoff", {})
    wait_for(
        lambda: (
            StepRun.objects.filter(run_id=delayed, name="pause", status="waiting").exists()
            and StepRun.objects.filter(run_id=backoff, name="flaky", status="retrying").exists()
        ),
        "both runs parked",
    )

    launcher.stop()

    before = parked([delayed, backoff])
    events_before = Event.objects.count()
    pause_due = before[(delayed, "pause")][2]
    retry_due = before[(backoff, "flaky")][2]
    assert before[(delayed, "pause")][:2] == ("waiting", 1)
    assert before[(backoff, "flaky")][:2] == ("retrying", 1)
    # Down past both due times: with nothing running, nothing may move.
    latest_due = max(pause_due, retry_due)
    while timezone.now() < latest_due + timedelta(seconds=0.5):
        time.sleep(0.1)
    assert parked([delayed, backoff]) == before
    assert Event.objects.count() == events_before

    launcher.start()
    # Measured from when it answers again: booting the launcher and then its tick process costs
    # two Django start-ups in series (about 1.5 s each here), which is not the timers' lateness.
    back_at = timezone.now()

    assert wait_final(client, delayed, timeout=20)["status"] == "succeeded"
    assert wait_final(client, backoff, timeout=20)["status"] == "succeeded"
    woke = event_time(delayed, "pause", "step.succeeded", 1)
    retried = event_time(backoff, "flaky", "step.ready", 2)
    assert pause_due <= woke <= max(pause_due, back_at) + timedelta(seconds=2)
    assert retry_due <= retried <= max(retry_due, back_at) + timedelta(seconds=2)


def test_a_step_claimed_by_a_worker_that_never_answers_is_reaped_and_retried(
    launcher, launcher_client_for, alice, publish, settings
):
    # The claim below is made in this process, so its lease is this process's setting.
    settings.FURROW = {**settings.FURROW, "LEASE_SECONDS": 2.0}
    run = services.start_run(publish(GHOSTED), {}, actor="test")
    first = StepRun.objects.get(run=run, name="first")
    assert services.claim(first.pk, 1, "ghost:1") is not None

    launcher.start(FURROW_LEASE_SECONDS="2", FURROW_HEARTBEAT="0.5")
    client = launcher_client_for(alice)

    done = wait_final(client, str(run.pk), timeout=20)
    assert done["status"] == "succeeded", done
    steps = {step["name"]: step for step in done["steps"]}
    assert (steps["first"]["status"], steps["first"]["attempt"]) == ("succeeded", 2)
    # One running event for attempt 1: the queue message sent at the start found it claimed.
    assert step_events(client, str(run.pk), "first") == [
        ("step.ready", 1, None),
        ("step.running", 1, None),
        ("step.retrying", 1, "attempt 1 lost: worker ghost:1 stopped answering"),
        ("step.ready", 2, None),
        ("step.running", 2, None),
        ("step.succeeded", 2, None),
    ]
