"""A newcomer's path, through real processes: publish over HTTP, run on a real worker cluster, watch."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from runs.models import Run
from tests.verify_helpers import assert_verified

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORKFLOW = """
name: e2e-pipeline
input:
  type: object
  properties:
    who: {type: string, default: "$(echo pwned)"}
    base_url: {type: string}
  required: [base_url]
steps:
  greet:
    type: shell
    run: |
      echo "hello {{ input.who }}"
      echo "line two" >&2
      echo 'OUTPUT: {"greeting": "hi", "n": 1}'
  flaky:
    type: shell
    needs: [greet]
    retry: {max_attempts: 3, delay: 100ms}
    run: '[ "$FURROW_ATTEMPT" -ge 3 ] && echo "OUTPUT: {\\"attempt\\": $FURROW_ATTEMPT}" || exit 1'
  probe:
    type: http
    needs: [greet]
    with: {url: "{{ input.base_url }}/health"}
  join:
    type: noop
    needs: [flaky, probe]
    with:
      greeting: "{{ steps.greet.output.greeting }}"
      attempt: "{{ steps.flaky.output.attempt }}"
      health: "{{ steps.probe.output.body.status }}"
"""

FAILING = """
name: e2e-failing
steps:
  boom: {type: shell, run: "echo about to fail; exit 7"}
  after: {type: noop, needs: [boom]}
"""


def wait_final(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            assert_verified(Run.objects.get(pk=run_id))  # rows agree with the event log
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s: {run['steps']}")


def test_a_workflow_published_over_http_runs_on_real_workers_with_logs(furrow, client_for, alice):
    client = client_for(alice)
    published = client.post(
        "/api/v1/workflows", content=WORKFLOW, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code == 201, published.text
    assert published.json()["version"] == 1

    started = client.post(
        "/api/v1/workflows/e2e-pipeline/runs", json={"input": {"base_url": furrow}}
    )
    assert started.status_code == 201, started.text
    run = wait_final(client, started.json()["id"])

    assert run["status"] == "succeeded", run
    assert run["output"] == {"join": {"greeting": "hi", "attempt": 3, "health": "ok"}}
    steps = {step["name"]: step for step in run["steps"]}
    assert steps["flaky"]["attempt"] == 3
    assert steps["probe"]["output"]["status"] == 200

    logs = client.get(f"/api/v1/runs/{run['id']}/logs").json()["lines"]
    texts = [(line["step"], line["stream"], line["text"]) for line in logs]
    assert ("greet", "stdout", "hello $(echo pwned)") in texts
    assert ("greet", "stderr", "line two") in texts
    plain = client.get(f"/api/v1/runs/{run['id']}/logs", headers={"Accept": "text/plain"})
    assert "[greet] hello $(echo pwned)" in plain.text

    events = client.get(f"/api/v1/runs/{run['id']}/events").json()
    flaky_events = [e["type"] for e in events if e["step"] == "flaky"]
    assert flaky_events.count("step.retrying") == 2
    assert events[-1]["type"] == "run.succeeded"


def test_a_failing_step_fails_the_run_and_skips_its_dependents(furrow, client_for, alice):
    client = client_for(alice)
    assert (
        client.post(
            "/api/v1/workflows", content=FAILING, headers={"Content-Type": "application/yaml"}
        ).status_code
        == 201
    )
    run = wait_final(
        client, client.post("/api/v1/workflows/e2e-failing/runs", json={}).json()["id"]
    )
    assert run["status"] == "failed"
    assert {s["name"]: s["status"] for s in run["steps"]} == {"boom": "failed", "after": "skipped"}
    assert "exit code 7" in run["error"]


def test_the_api_refuses_requests_without_credentials_but_health_answers(furrow):
    assert httpx.get(f"{furrow}/health").status_code == 200
    assert httpx.get(f"{furrow}/api/v1/workflows").status_code in (401, 403)
